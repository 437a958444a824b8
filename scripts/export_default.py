"""Package a trained codec and/or LM as the built-in default model (llasa/assets/default).

    python scripts/export_default.py --codec runs/codec_small/codec   # before tokenizing for the LM
    python scripts/export_default.py --lm runs/lm_default/checkpoint-N

Writes `codec/` and `lm/` (safetensors in bf16, replacing what is there, so the repository
keeps one compact copy), and one voice profile per seen corpus speaker under `voices/` (the default
voice, used when a request names none, is llasa.defaults.DEFAULT_VOICE). The model card
(MODEL_CARD.md) is written by hand from the recorded figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from llasa.codec import Codec
from llasa.codec.codec import ENCODE_KEY
from llasa.defaults import DEFAULT_DIR
from llasa.lm.model import load as load_lm
from llasa.lm.sampling import SAMPLING_KEY
from llasa.search.search import SEARCH_KEY
from llasa.train.lm import PROGRESS_FILE
from llasa.tts import TEXT_KEY, Voice


def voice_name(speaker: str) -> str:
    """flite_slt -> slt, festival_slt_hts -> slt_hts: short names for `--voice`."""
    return speaker.split("_", 1)[1] if speaker.startswith(("flite_", "festival_")) else speaker


def pick_clips(corpus: Path, per_speaker: int = 1) -> dict[str, dict]:
    """One validation clip of 2.5-6 s per seen speaker: a prompt that fits and says enough."""
    speakers = json.loads((corpus / "speakers.json").read_text())
    chosen: dict[str, dict] = {}
    for line in (corpus / "val.jsonl").read_text().splitlines():
        item = json.loads(line)
        name = item["speaker"]
        if speakers[name]["held_out"] or name in chosen or not 2.5 <= item.get("duration", 0) <= 6.0:
            continue
        chosen[name] = item
    return chosen


def keep_recommendation(config, shipped: Path, key: str, what: str) -> None:
    """What the shipped weights recommend (`key` in their config.json: the LM's sampling, the
    codec's encoding) carries over to new weights that bring none; measure it again for them."""
    value = json.loads(shipped.read_text()).get(key) if shipped.is_file() else None
    if value and not getattr(config, key, None):
        setattr(config, key, value)
        print(f"kept {key} {value} of the shipped {what}: re-measure it for these weights")


def export_codec(source: str, out: Path, dtype: torch.dtype, corpus: Path) -> Codec:
    """The codec in `dtype`, then reloaded from what was written: voices (and any shards made
    for the LM) must come from exactly the weights that ship."""
    codec = Codec.from_pretrained(source)
    keep_recommendation(codec.model.config, out / "codec" / "config.json", ENCODE_KEY, "codec")
    if (out / "codec").exists():
        shutil.rmtree(out / "codec")
    codec.model.to(dtype).save_pretrained(out / "codec")
    codec = Codec.from_pretrained(out / "codec")
    voices = out / "voices"
    if voices.exists():
        shutil.rmtree(voices)
    for speaker, item in pick_clips(corpus).items():
        name = voice_name(speaker)
        voice = Voice.from_audio(codec, corpus / item["audio"], item.get("normalized") or item["text"], name=name)
        voice.save(voices / f"{name}.json")
        print(f"voice {name}: {voice.seconds:.1f} s  {voice.text!r}")
    return codec


def export_lm(source: str, out: Path, dtype: torch.dtype) -> None:
    model, tokenizer = load_lm(source, dtype=torch.float32)
    keep_recommendation(model.config, out / "lm" / "config.json", SAMPLING_KEY, "LM")
    keep_recommendation(model.config, out / "lm" / "config.json", TEXT_KEY, "LM")
    keep_recommendation(model.config, out / "lm" / "config.json", SEARCH_KEY, "LM")
    if (out / "lm").exists():
        shutil.rmtree(out / "lm")
    model.to(dtype).save_pretrained(out / "lm")
    tokenizer.save_pretrained(out / "lm")
    progress = Path(source) / PROGRESS_FILE
    if progress.is_file():  # lets `continue_from` carry the run on in a later sitting
        shutil.copy(progress, out / "lm" / PROGRESS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", help="codec checkpoint to ship (also remakes the voices)")
    parser.add_argument("--lm", help="LM checkpoint to ship")
    parser.add_argument("--corpus", default="runs/corpus", help="the synthetic corpus (for the voice prompts)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--out", default=str(DEFAULT_DIR))
    args = parser.parse_args()
    if not (args.codec or args.lm):
        parser.error("nothing to export: give --codec and/or --lm")
    out, dtype = Path(args.out), getattr(torch, args.dtype)
    if args.codec:
        export_codec(args.codec, out, dtype, Path(args.corpus))
    if args.lm:
        export_lm(args.lm, out, dtype)
    sizes = {p.relative_to(out): p.stat().st_size for p in out.rglob("*.safetensors")}
    print(json.dumps({str(k): f"{v / 1e6:.1f} MB" for k, v in sizes.items()}), f"total {sum(sizes.values()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
