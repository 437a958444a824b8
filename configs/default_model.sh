#!/usr/bin/env bash
# The built-in default model (llasa/assets/default), end to end on a CPU. Every stage resumes
# where it stopped, so run this again after an interruption.
#   bash configs/default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FRONTEND=espeak:en-us   # the LM reads IPA phonemes (llasa/lm/frontend.py says why)

llasa data synth runs/corpus --hours 8 --seed 0                       # ~8 h, 11 voices, ~20 min
llasa train codec configs/codec_small.yaml                            # stage 1: reconstruction
llasa data tokenize runs/corpus/train.jsonl runs/shards --codec runs/codec_small/codec \
    --text-field normalized --frontend "$FRONTEND" --max-length 1024
llasa data tokenize runs/corpus/val.jsonl runs/shards_val --codec runs/codec_small/codec \
    --tokenizer runs/shards/tokenizer --text-field normalized --frontend "$FRONTEND" --max-length 1024
llasa train lm configs/lm_default.yaml
llasa train codec configs/codec_small_gan.yaml                        # stage 2: decoder-only GAN; codes unchanged
python scripts/export_default.py --codec runs/codec_small_gan/codec --lm runs/lm_default/final --corpus runs/corpus
