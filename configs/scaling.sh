#!/usr/bin/env bash
# Train-time scaling in miniature (the paper's Fig. 3, docs/train-scaling.md): the default
# model's recipe, configs/lm_default.yaml, unchanged but for the size and the data (the first
# corpus), at tiny (0.1M) and micro (1.6M), against mini (12M: the default model's own run,
# runs/lm_default from configs/default_model.sh). Every run follows the recipe's schedule and
# stops at STEPS; eval loss is logged every 250 steps. On a 2-core CPU beside another run
# (THREADS=1), 1,000 steps take ~45 min (tiny) and ~80 min (micro): attention over ~700-token
# rows, not width, sets the cost of these small models.
#   STEPS=1000 bash configs/scaling.sh      # then see runs/train_scaling/train_scaling.png
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-1000}
export OMP_NUM_THREADS=${THREADS:-2}
for size in tiny micro; do
    llasa train lm configs/lm_default.yaml --set init=preset:$size --set data=runs/shards --set output_dir=runs/scale_$size \
        --set train.save_every=250 --set train.eval_every=250 --max-steps "$STEPS"
done
# eval loss against compute for all three; WER of each run's latest checkpoint on held-out sentences
llasa eval train-scaling runs/scale_tiny runs/scale_micro runs/lm_default -o runs/train_scaling \
    --list runs/eval_lists/tts_seen.jsonl --limit 22
mkdir -p docs && cp runs/train_scaling/train_scaling.png docs/train_scaling.png
