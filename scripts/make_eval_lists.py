"""Evaluation lists of the default model from the synthetic corpus's held-out split.

    python scripts/make_eval_lists.py [--corpus runs/corpus] [--out runs/eval_lists]

- codec_test.jsonl: up to 6 test recordings per voice (for `llasa eval codec`);
- codec_confirm.jsonl, codec_confirm2.jsonl: 6 more per voice each, to confirm on clips it was
  not chosen on a codec setting picked on codec_test (the second for a setting whose choice
  codec_confirm has seen);
- tts_seen.jsonl: 4 held-out sentences per seen voice, prompted with a validation clip of
  that voice (another sentence);
- tts_unseen.jsonl: 10 sentences of the held-out voice, prompted with its first test clip;
- tts_seen_noprompt.jsonl: tts_seen's sentences with no voice prompt (the model picks a voice:
  its WER, next to tts_seen's, separates reading the text from continuing a prompt);
- tts_val.jsonl: 8 validation sentences per seen voice, prompted as in tts_seen: for choosing
  inference settings (sampling, search) without looking at the test split.
Items alternate between voices, so `--limit N` still covers many voices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
from collections import defaultdict
from pathlib import Path


def round_robin(items: list[dict]) -> list[dict]:
    by_voice = defaultdict(list)
    for item in items:
        by_voice[item["speaker"]].append(item)
    return [item for group in itertools.zip_longest(*by_voice.values()) for item in group if item]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{path}: {len(rows)} items")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="runs/corpus")
    parser.add_argument("--out", default="runs/eval_lists")
    args = parser.parse_args()
    corpus, out = Path(args.corpus), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(corpus, out))  # lists resolve paths against their own folder
    rng = random.Random(0)
    speakers = json.loads((corpus / "speakers.json").read_text())
    test = [json.loads(line) for line in (corpus / "test.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (corpus / "val.jsonl").read_text().splitlines()]
    by_voice = defaultdict(list)
    for item in sorted(test, key=lambda x: x["id"]):
        by_voice[item["speaker"]].append(item)

    codec_lists = {"codec_test": [], "codec_confirm": [], "codec_confirm2": []}  # 6 clips per voice each
    for voice, items in sorted(by_voice.items()):
        items = items[:]
        rng.shuffle(items)
        for i, rows in enumerate(codec_lists.values()):
            rows += [{**x, "audio": str(rel / x["audio"])} for x in items[6 * i : 6 * i + 6]]
    for name, rows in codec_lists.items():
        write(out / f"{name}.jsonl", round_robin(rows))

    prompts = {}
    for item in val:
        if item["speaker"] not in prompts and 2.5 <= item["duration"] <= 6:
            prompts[item["speaker"]] = item

    def tts_item(x: dict, prompt: dict) -> dict:
        return {"id": x["id"], "speaker": x["speaker"], "text": x["normalized"], "prompt_text": prompt["normalized"],
                "prompt_wav": str(rel / prompt["audio"]), "reference_wav": str(rel / x["audio"])}

    seen, unseen = [], []
    for voice, items in sorted(by_voice.items()):
        if speakers[voice]["held_out"]:
            unseen += [tts_item(x, items[0]) for x in items[1:11]]
        else:
            seen += [tts_item(x, prompts[voice]) for x in items[:4]]
    write(out / "tts_seen.jsonl", round_robin(seen))
    write(out / "tts_seen_noprompt.jsonl", [{k: v for k, v in x.items() if not k.startswith("prompt")} for x in round_robin(seen)])
    write(out / "tts_unseen.jsonl", unseen)
    val_by_voice = defaultdict(list)
    for item in sorted(val, key=lambda x: x["id"]):
        if item["speaker"] in prompts and item["id"] != prompts[item["speaker"]]["id"]:
            val_by_voice[item["speaker"]].append(item)
    tuning = [tts_item(x, prompts[voice]) for voice, items in sorted(val_by_voice.items()) for x in items[:8]]
    write(out / "tts_val.jsonl", round_robin(tuning))


if __name__ == "__main__":
    main()
