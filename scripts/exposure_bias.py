"""How much of a model's TTS error is exposure bias: the same LM, fed the true past or its own.

    python scripts/exposure_bias.py runs/eval_lists/tts_seen.jsonl --limit 40 [--model DIR] [--codec DIR]

For each list item with a reference recording (and a voice prompt), the recording is encoded
and the LM reads the true codes (teacher forcing); its predictions are decoded and transcribed:

- real: the reference's own codes, decoded (the codec's share of the error);
- forced_argmax / forced_sample: each frame the LM's most likely / a sampled (T = 0.8) code,
  given the true frames before it: what the model knows, one frame at a time;
- free: the LM's own sampled speech, as `llasa eval tts` makes it (each frame after its own).

forced WER near real and free far above it: the model knows the next frame but drifts on its
own output (exposure bias; see `speech_noise` in the LM recipe). One JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from llasa import audio as audio_io
from llasa.defaults import default_codec_path, default_model_path
from llasa.eval.lists import read_eval_list
from llasa.eval.metrics import Metrics
from llasa.lm.sampling import speech_logits
from llasa.tts import Synthesizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_list")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--model", default=None, help="LM directory (default: the built-in model)")
    parser.add_argument("--codec", default=None, help="codec directory (default: the built-in codec)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    synth = Synthesizer.from_pretrained(args.model or default_model_path(), args.codec or default_codec_path())
    metrics = Metrics()
    items = [i for i in read_eval_list(args.eval_list) if i.reference_wav and i.prompt_wav][: args.limit]
    if not items:
        raise SystemExit(f"{args.eval_list}: no item has both a reference recording and a voice prompt")
    weight = synth.model.get_output_embeddings().weight
    generator = torch.Generator().manual_seed(args.seed)
    wer = {"real": [], "forced_argmax": [], "forced_sample": [], "free": []}
    accuracy = {"forced_argmax": [], "forced_sample": []}
    for n, item in enumerate(items):
        voice = synth.voice(audio_io.load(item.prompt_wav, synth.sample_rate), item.prompt_text, source_rate=synth.sample_rate)
        real = synth.codec.encode(audio_io.load(item.reference_wav, synth.sample_rate))
        prompt = synth.prompt(item.text, voice)
        ids = torch.tensor([prompt + [int(c) + synth.vocab.speech_offset for c in real]])
        with torch.inference_mode():
            hidden = synth.model.model(input_ids=ids).last_hidden_state[0]
            # position p predicts token p + 1: the predictions of the reference's codes
            logits = speech_logits(hidden[len(prompt) - 1 : -1], weight, synth.vocab)[:, :-1]  # END column dropped
        forced = {
            "forced_argmax": logits.argmax(-1).numpy(),
            "forced_sample": torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=generator)[:, 0].numpy(),
        }
        for name, codes in forced.items():
            accuracy[name].append(float((codes == real).mean()))
        audio = dict(zip(["real", *forced], synth.decode([real, *forced.values()], voice)))
        audio["free"] = synth.tts(item.text, voice, seed=args.seed + n, progress=False)
        for name, wav in audio.items():
            wer[name].append(metrics.intelligibility(wav, item.text)["wer"])
    print(json.dumps({
        "items": len(items),
        **{f"wer_{k}": round(100 * float(np.mean(v)), 2) for k, v in wer.items()},
        **{f"accuracy_{k}": round(float(np.mean(v)), 4) for k, v in accuracy.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
