"""`llasa eval tts | codec | scaling | train-scaling`: thin verbs over :mod:`llasa.eval`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llasa.cli_args import add_refine_argument
from llasa.search.cli_args import (
    add_sampling_arguments,
    add_search_arguments,
    asr_backends,
    check_generation_args,
    sampling_from_args,
    searcher_from_args,
    wer_options,
)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def _common(parser: argparse.ArgumentParser, *, synthesis: bool) -> None:
    parser.add_argument("list", help="benchmark list: Seed-TTS-eval meta.lst or JSONL" if synthesis
                        else "manifest of recordings (JSONL with audio and text, or any `llasa data` layout)")  # fmt: skip
    parser.add_argument("-o", "--output", required=True, help="output folder (results.jsonl, wavs/, summary.*); reruns resume")
    parser.add_argument("--codec", help="X-codec2 codec: hub id or local directory (default: the built-in one)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items")
    parser.add_argument("--dnsmos", action="store_true", help="also measure DNSMOS (about 1 s per clip on CPU)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    if synthesis:
        parser.add_argument("--model", help="Llasa model: hub id or local directory (default: the built-in one)")
        parser.add_argument("--seed", type=int, default=0, help="item i is sampled with seed + i (default 0)")
        add_sampling_arguments(parser)


def _metric_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wer-model", help="Whisper checkpoint directory for WER/CER (default PocketSphinx, English)")
    parser.add_argument("--sim-model", help="speaker-verification checkpoint for similarity (default Resemblyzer)")
    parser.add_argument("--language", default="en", help="language of the texts (zh/ja: CER; default en)")


def _judge_arguments(parser: argparse.ArgumentParser) -> None:
    """The judge of a search's output, apart from its verifiers (--wer-model, --wer-asr)."""
    group = parser.add_argument_group("judge", "the ASR that measures WER/CER, apart from the search's wer verifier: "
                                      "a gain judged by the verifier itself only shows it was optimised")  # fmt: skip
    group.add_argument("--judge-wer-model", help="Whisper checkpoint directory that judges WER/CER (default: the "
                       "strongest ASR installed)")  # fmt: skip
    group.add_argument("--judge-asr", choices=asr_backends(), help="the judge's ASR backend (default: the model's "
                       "kind, else the strongest installed)")  # fmt: skip


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="benchmarks: TTS lists, codec resynthesis, inference-time scaling",
                                   description="Evaluate models on benchmark lists.")  # fmt: skip
    sub = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    tts = sub.add_parser("tts", help="synthesise a Seed-TTS-eval list; WER/CER, speaker similarity, DNSMOS, RTF")
    _common(tts, synthesis=True)
    tts.add_argument("-n", type=int, help="with --search best-of-n: candidates per item (default 8)")
    add_search_arguments(tts)
    _judge_arguments(tts)
    tts.set_defaults(handler=run_eval_tts)

    codec = sub.add_parser("codec", help="codec resynthesis: WER vs the original's, similarity, STOI, PESQ")
    _common(codec, synthesis=False)
    _metric_arguments(codec)
    add_refine_argument(codec)
    codec.set_defaults(handler=run_eval_codec)

    scaling = sub.add_parser("scaling", help="quality against search compute, per strategy; plot + JSON")
    _common(scaling, synthesis=True)
    scaling.add_argument("--wer-model", help="Whisper checkpoint directory of the searches' wer verifier (default: "
                         "its own choice, the strongest ASR installed)")  # fmt: skip
    scaling.add_argument("--wer-asr", choices=asr_backends(), help="the searches' wer verifier's ASR backend")
    scaling.add_argument("--sim-model", help="speaker-verification checkpoint of the sim verifier and the similarity metric "
                         "(default Resemblyzer)")  # fmt: skip
    scaling.add_argument("--language", default="en", help="language of the texts (zh/ja: CER; default en)")
    _judge_arguments(scaling)
    scaling.add_argument("--strategies", default="best-of-n,prm-sim+orm-wer", help="comma-separated search strategies")
    scaling.add_argument("--sizes", type=_sizes, default=[1, 2, 4, 8],
                         help="candidates (best-of-n: only the largest is run, the smaller are read off its "
                              "candidates) or rows in flight, beams x expand (beam), e.g. 1,2,4,8")  # fmt: skip
    scaling.add_argument("--expand", type=int, default=2, help="beam search: continuations per kept beam (default 2)")
    scaling.add_argument("--step-tokens", type=int, default=50, help="beam search: tokens between verifier calls (default 50)")
    scaling.add_argument("--verifier", help="verifier(s) of best-of-n and beam (default wer)")
    scaling.set_defaults(handler=run_eval_scaling)

    train = sub.add_parser("train-scaling", help="eval loss and WER against training compute, for runs of several sizes")
    train.add_argument("runs", nargs="+", help="`llasa train lm` output directories (one per model size)")
    train.add_argument("-o", "--output", required=True, help="output folder (train_scaling.png/.json, summary.md)")
    train.add_argument("--list", help="also measure the WER of each run's latest checkpoint on this benchmark list")
    train.add_argument("--limit", type=int, help="with --list: only the first N items")
    train.add_argument("--codec", help="with --list: X-codec2 codec (default: the built-in one)")
    train.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    train.add_argument("--seed", type=int, default=0, help="item i is sampled with seed + i (default 0)")
    train.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    _metric_arguments(train)
    train.set_defaults(handler=run_eval_train_scaling, dnsmos=False)


def _metrics(args):
    from llasa.eval.metrics import Metrics

    return Metrics(language=args.language, wer_model=args.wer_model, sim_model=args.sim_model, dnsmos=args.dnsmos)


def _judge(args):
    """The metrics of a verb that searches: their ASR is the --judge-* one."""
    from llasa.eval.metrics import Metrics

    return Metrics(language=args.language, wer_model=args.judge_wer_model, wer_asr=args.judge_asr, sim_model=args.sim_model,
                   dnsmos=args.dnsmos)  # fmt: skip


def _warn_if_judged_by_verifier(summaries: list[dict]) -> None:
    """A gain judged by the search's own verifier measures what the search optimised: say so."""
    flagged = [s for s in summaries if s.get("judge_is_verifier")]
    if flagged:
        print(f"llasa eval: warning: the judge ASR ({flagged[0]['judge_asr']}) is the search's own wer verifier, so "
              "the WER gain is measured by the verifier itself and flatters the search; judge with another ASR "
              "(--judge-wer-model / --judge-asr) or verify with one (--wer-model / --wer-asr)", file=sys.stderr)  # fmt: skip
    if any(s.get("sim_judge_is_verifier") for s in summaries):
        print("llasa eval: warning: speaker similarity is measured by the search's own sim verifier, so its gain "
              "is the verifier's own score", file=sys.stderr)  # fmt: skip


def _items(args):
    from llasa.audio import check_writable
    from llasa.eval.lists import read_eval_list

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    check_writable(args.output, folder=True, what="--output")
    return read_eval_list(args.list)[: args.limit]


def _exit_status(failed: int, items: int, results: Path, summary: Path) -> int:
    """1 when items failed (their errors are in ``results``; the summary is written all the
    same), so that scripts and CI notice; else 0."""
    if not failed:
        return 0
    print(f"llasa eval: {failed} of {items} items failed (errors in {results}; summary in {summary})", file=sys.stderr)
    return 1


def _synth_and_params(args):
    from llasa.defaults import codec_or_default, model_or_default
    from llasa.tts import Synthesizer

    synth = Synthesizer.from_pretrained(model_or_default(args.model), codec_or_default(args.codec), device=args.device)
    return synth, sampling_from_args(args, synth)


def _print_summary(summary) -> None:
    print(json.dumps(summary, ensure_ascii=False))


def run_eval_tts(args: argparse.Namespace) -> int:
    from llasa.eval.tts import evaluate_tts

    if args.n is not None and args.search != "best-of-n":
        raise ValueError("-n is the candidate count of --search best-of-n")
    args.n = 8 if args.n is None else args.n
    check_generation_args(args)
    items = _items(args)
    metrics = _judge(args)
    searcher = searcher_from_args(args, verifier_cache=metrics.search_cache())
    synth, params = _synth_and_params(args)
    summary = evaluate_tts(synth, items, args.output, metrics=metrics, searcher=searcher, params=params, seed=args.seed)
    _print_summary(summary)
    _warn_if_judged_by_verifier([summary])
    out = Path(args.output)
    return _exit_status(summary["failed"], summary["items"], out / "results.jsonl", out / "summary.json")


def run_eval_codec(args: argparse.Namespace) -> int:
    from llasa.audio import check_writable
    from llasa.codec import Codec
    from llasa.defaults import codec_or_default
    from llasa.data.manifest import load_corpus
    from llasa.eval.codec import evaluate_codec

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    check_writable(args.output, folder=True, what="--output")
    items = list(load_corpus(args.list))[: args.limit]  # the whole list is checked, not just the rows used
    codec = Codec.from_pretrained(codec_or_default(args.codec), device=args.device)
    # resolved here, not in Codec.encode, so that the results record the steps taken
    steps = codec.resolve_refine_steps(args.refine_steps)
    summary = evaluate_codec(codec, items, args.output, metrics=_metrics(args), refine_steps=steps)
    _print_summary(summary)
    out = Path(args.output)
    return _exit_status(summary["failed"], summary["items"], out / "results.jsonl", out / "summary.json")


def run_eval_scaling(args: argparse.Namespace) -> int:
    from llasa.eval.scaling import evaluate_scaling
    from llasa.search import STRATEGIES
    from llasa.tts import MAX_CANDIDATES

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown or args.strategies!r}; choose from {', '.join(STRATEGIES)}")
    if max(args.sizes) > MAX_CANDIDATES:
        raise ValueError(f"--sizes {max(args.sizes)}: at most {MAX_CANDIDATES} candidates are sampled side by side")
    check_generation_args(args)
    items = _items(args)
    metrics = _judge(args)
    synth, params = _synth_and_params(args)
    points = evaluate_scaling(synth, items, args.output, metrics=metrics, strategies=strategies, sizes=args.sizes,
                              expand=args.expand, step_tokens=args.step_tokens, verifiers=args.verifier,
                              wer_options=wer_options(args.wer_model, args.wer_asr), params=params, seed=args.seed)  # fmt: skip
    for point in points:
        _print_summary(point)
    _warn_if_judged_by_verifier(points)
    # best-of-n points read off a larger run share its items: count the runs' own points only
    runs = [p for p in points if "derived_from" not in p]
    out = Path(args.output)
    return _exit_status(sum(p["failed"] for p in runs), sum(p["items"] for p in runs), out / "*" / "results.jsonl",
                        out / "scaling.json")  # fmt: skip


def run_eval_train_scaling(args: argparse.Namespace) -> int:
    from llasa.eval.train_scaling import evaluate_train_scaling

    kwargs = {}
    if args.list:
        from llasa.codec import Codec
        from llasa.defaults import codec_or_default
        from llasa.lm.sampling import SamplingParams, check_seed

        params, seed = SamplingParams(temperature=args.temperature), check_seed(args.seed, name="--seed")
        kwargs = dict(items=_items(args), codec=Codec.from_pretrained(codec_or_default(args.codec), device=args.device),
                      metrics=_metrics(args), params=params, seed=seed)  # fmt: skip
    elif args.limit is not None:
        raise ValueError("--limit applies to --list")
    curves = evaluate_train_scaling(args.runs, args.output, device=args.device, **kwargs)
    for curve in curves:
        last = curve["points"][-1]
        _print_summary({"size": curve["label"], "params": curve["params"], "step": last["step"], "flops": last["flops"],
                        "eval_loss": last["eval_loss"], "wer": curve.get("wer"), "sim": curve.get("sim")})  # fmt: skip
    measured = [c for c in curves if "failed" in c]
    out = Path(args.output)
    return _exit_status(sum(c["failed"] for c in measured), sum(c["items"] for c in measured), out / "*" / "results.jsonl",
                        out / "train_scaling.json")  # fmt: skip
