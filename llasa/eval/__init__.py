"""Evaluation: benchmark lists, metrics, resumable runs and reports.

    from llasa.eval import Metrics, read_eval_list, evaluate_tts, evaluate_codec, evaluate_scaling
    metrics = Metrics(language="en", dnsmos=False)        # WER (PocketSphinx or Whisper), SIM, DNSMOS
    summary = evaluate_tts(synth, read_eval_list("seedtts_testset/en/meta.lst"), "out/en", metrics=metrics)

`llasa eval tts | codec | scaling` are the same calls from the command line.
"""

from llasa.eval.codec import evaluate_codec, summarize_codec
from llasa.eval.lists import EvalItem, read_eval_list, read_jsonl_list, read_meta_lst
from llasa.eval.metrics import Metrics, pesq, stoi
from llasa.eval.report import ResultLog, write_summary
from llasa.eval.scaling import evaluate_scaling, plot_scaling, searcher_for
from llasa.eval.tts import evaluate_tts, summarize_tts

__all__ = [
    "EvalItem",
    "Metrics",
    "ResultLog",
    "evaluate_codec",
    "evaluate_scaling",
    "evaluate_tts",
    "pesq",
    "plot_scaling",
    "read_eval_list",
    "read_jsonl_list",
    "read_meta_lst",
    "searcher_for",
    "stoi",
    "summarize_codec",
    "summarize_tts",
    "write_summary",
]
