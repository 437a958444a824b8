"""What cloning from audio alone costs: a voice clip given with its true transcript against the
same clip transcribed by the ASR (`Synthesizer.voice(clip)` without text), on recorded speech
that no model here was trained on.

Clips: Debian's pocketsphinx-testdata (``/usr/share/pocketsphinx/test/data``): 5 LibriVox clips
of one reader (3-7 s, prose) and 5 of another speaker saying playing cards (1-3.5 s), with their
transcripts. Each clip becomes two voices: one with its true transcript, one with what the
`wer` verifier's ASR hears (its own choice, the strongest installed; --asr names a backend,
--asr-model a Whisper checkpoint), as `Synthesizer.voice(clip)` transcribes it. Both voices
speak the same held-out sentences (bench/peer_sentences.txt) with the built-in model, sentence
j under seed j, so the pairs differ only in the transcript.

Figures: transcript_wer (the ASR's transcripts against the truth, pooled over the clips); per
voice kind ("given", "heard"): sim, Resemblyzer cosine between each output and its reference
clip (mean), and wer, the outputs' WER pooled over all sentences, judged by the strongest ASR
installed (the wer verifier's default: Whisper tiny.en through faster-whisper, else
PocketSphinx; "judge_is_transcriber" when it also transcribed the clips). sim_cost =
given.sim - heard.sim and wer_cost = heard.wer - given.wer: positive is what the missing
transcript costs. A clip whose transcript the ASR gets exactly right is spoken once and counts
for both. Prints one JSON line:

    python bench/clone.py [--sentences 3] [--clips DIR] [--asr BACKEND] [--asr-model DIR] [--details FILE.jsonl] [--quick]

--quick: the first clip, one sentence (checks that the bench runs; its figures mean nothing);
without pocketsphinx-testdata it reports itself skipped rather than failing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from llasa.audio import load
from llasa.defaults import default_codec_path, default_model_path
from llasa.tts import Synthesizer, speech_recognizer
from llasa.verify import VerifyRequest, get_verifier
from llasa.verify.text import units, word_errors
from llasa.verify.wer import ASR_BACKENDS

SENTENCES = Path(__file__).with_name("peer_sentences.txt")  # held out of every corpus here

CLIPS = Path("/usr/share/pocketsphinx/test/data")
# each transcription file: "<s> words </s> (file id)" a line
TRANSCRIPTS = {"librivox": "librivox/transcription", "cards": "cards/cards.transcription"}
_LINE = re.compile(r"<s>(.*)</s>\s*\((\S+)\)")


def recorded_clips(root: Path) -> list[tuple[str, Path, str]]:
    """(set, wav, true transcript) of every clip with a transcript under ``root``."""
    clips = []
    for group, listing in TRANSCRIPTS.items():
        path = root / listing
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = _LINE.search(line)
            if match and (path.parent / f"{match.group(2)}.wav").is_file():
                clips.append((group, path.parent / f"{match.group(2)}.wav", " ".join(match.group(1).split())))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=3, help="held-out sentences each voice speaks (default 3)")
    parser.add_argument("--clips", type=Path, default=CLIPS, help=f"pocketsphinx test data (default {CLIPS})")
    parser.add_argument("--limit", type=int, help="use the first N clips (default: all)")
    parser.add_argument("--asr", choices=ASR_BACKENDS, help="the ASR backend that transcribes the clips (default: the "
                        "wer verifier's choice)")  # fmt: skip
    parser.add_argument("--asr-model", help="Whisper checkpoint directory that transcribes the clips")
    parser.add_argument("--details", help="write each clip's transcripts and scores here (JSON lines)")
    parser.add_argument("--quick", action="store_true", help="one clip, one sentence: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(sentences=1, limit=1)
        args = parser.parse_args()
    clips = recorded_clips(args.clips)[: args.limit]
    if not clips:
        if args.quick:
            print(json.dumps({"bench": "clone", "quick": True, "skipped": f"no transcribed clips under {args.clips} "
                              "(apt-get install pocketsphinx-testdata)"}))  # fmt: skip
            return
        sys.exit(f"no transcribed clips under {args.clips}: apt-get install pocketsphinx-testdata, or pass --clips")
    model, codec = default_model_path(), default_codec_path()
    if not (model and codec):
        sys.exit("no built-in default model in this checkout")
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()][: args.sentences]

    started = time.perf_counter()
    synth = Synthesizer.from_pretrained(model, codec)
    asr = speech_recognizer(args.asr_model, args.asr)
    judge_asr = get_verifier("wer").asr  # the verifier's own choice: the strongest installed
    sim = get_verifier("sim")
    totals = {kind: {"errors": 0, "words": 0, "sims": []} for kind in ("given", "heard")}
    transcript_errors = transcript_words = exact = 0
    details = []
    for group, path, truth in clips:
        reference = load(path)
        with warnings.catch_warnings():  # the transcript it heard is reported below
            warnings.simplefilter("ignore", UserWarning)
            heard_voice = synth.voice(reference, name=path.stem, source_rate=16000, asr=asr)
        given_voice = synth.voice(reference, truth, name=path.stem, source_rate=16000)
        errors, words = word_errors(truth, heard_voice.text)
        transcript_errors, transcript_words = transcript_errors + errors, transcript_words + words
        same = units(truth) == units(heard_voice.text)
        exact += same
        request = VerifyRequest(text="", prompt_audio=reference)
        state = sim.prepare(request)
        record = {"clip": path.name, "set": group, "truth": truth, "heard": heard_voice.text, "transcript_errors": errors,
                  "words": words}  # fmt: skip
        for kind, voice in (("given", given_voice), ("heard", heard_voice)):
            if kind == "heard" and same:
                wavs, hyps = record["given_wavs"], record["given_hyps"]
            else:
                wavs = [synth.tts(text, voice, seed=j, progress=False) for j, text in enumerate(texts)]
                hyps = judge_asr.transcribe(wavs, "en")
            sims = [s.total for s in sim.score(wavs, request, state)]
            counts = [word_errors(text, hyp) for text, hyp in zip(texts, hyps)]
            totals[kind]["errors"] += sum(e for e, _ in counts)
            totals[kind]["words"] += sum(w for _, w in counts)
            totals[kind]["sims"].extend(sims)
            record[f"{kind}_wavs"], record[f"{kind}_hyps"] = wavs, hyps
            record[kind] = {"sim": round(float(np.mean(sims)), 4), "wer": round(sum(e for e, _ in counts) / sum(w for _, w in counts), 4),
                            "hyps": hyps}  # fmt: skip
        details.append({k: v for k, v in record.items() if not k.endswith(("_wavs", "_hyps"))})
        print(f"{path.name}: heard {heard_voice.text!r} for {truth!r}; given {record['given']['sim']:.3f} sim "
              f"{record['given']['wer']:.2f} wer, heard {record['heard']['sim']:.3f} sim {record['heard']['wer']:.2f} wer",
              file=sys.stderr)  # fmt: skip
    if args.details:
        Path(args.details).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in details))

    figures = {kind: {"sim": round(float(np.mean(t["sims"])), 4), "wer": round(t["errors"] / t["words"], 4)}
               for kind, t in totals.items()}  # fmt: skip
    print(json.dumps({
        "bench": "clone", "quick": args.quick, "clips": len(clips), "sets": sorted({g for g, _, _ in clips}),
        "sentences": len(texts), "transcriber": asr.name, "judge": judge_asr.name, "judge_is_transcriber": asr.name == judge_asr.name,
        "transcript_wer": round(transcript_errors / transcript_words, 4), "transcripts_exact": exact,
        **figures,
        "sim_cost": round(figures["given"]["sim"] - figures["heard"]["sim"], 4),
        "wer_cost": round(figures["heard"]["wer"] - figures["given"]["wer"], 4),
        "seconds": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
