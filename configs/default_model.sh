#!/usr/bin/env bash
# The built-in default model (llasa/assets/default), end to end on a CPU. Every stage resumes
# where it stopped, so run this again after an interruption.
#   bash configs/default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FRONTEND=espeak:en-us   # the LM reads IPA phonemes (llasa/lm/frontend.py says why)
CODEC=llasa/assets/default/codec

llasa data synth runs/corpus --hours 8 --seed 0                       # ~8 h, 11 voices, ~20 min
if [ ! -f "$CODEC/config.json" ]; then
    llasa train codec configs/codec_small.yaml                        # stage 1: reconstruction
    # ship it first (bf16), so that the LM learns the codes of exactly the weights that ship
    python scripts/export_default.py --codec runs/codec_small/codec
fi
llasa data tokenize runs/corpus/train.jsonl runs/shards --codec "$CODEC" \
    --text-field normalized --frontend "$FRONTEND" --max-length 1024
llasa data tokenize runs/corpus/val.jsonl runs/shards_val --codec "$CODEC" \
    --tokenizer runs/shards/tokenizer --text-field normalized --frontend "$FRONTEND" --max-length 1024
# 8 h more, saying none of the first corpus's sentences (the LM had begun to memorise 2,200 of them)
llasa data synth runs/corpus_more --hours 8 --seed 1 --exclude runs/corpus
llasa data tokenize runs/corpus_more/train.jsonl runs/shards_more --codec "$CODEC" \
    --tokenizer runs/shards/tokenizer --text-field normalized --frontend "$FRONTEND" --max-length 1024
# and 8 h more again (joined at step 4,500, when the text gain was still rising with every new sentence)
llasa data synth runs/corpus_more2 --hours 8 --seed 2 --exclude runs/corpus runs/corpus_more
llasa data tokenize runs/corpus_more2/train.jsonl runs/shards_more2 --codec "$CODEC" \
    --tokenizer runs/shards/tokenizer --text-field normalized --frontend "$FRONTEND" --max-length 1024
# two more 8 h corpora of new sentences (fifth sitting; from corpus_more4 on, the prose pool runs
# out and templates fill the rest)
llasa data synth runs/corpus_more3 --hours 8 --seed 3 --exclude runs/corpus runs/corpus_more runs/corpus_more2
llasa data synth runs/corpus_more4 --hours 8 --seed 4 --exclude runs/corpus runs/corpus_more runs/corpus_more2 runs/corpus_more3
for i in 3 4; do
    llasa data tokenize runs/corpus_more$i/train.jsonl runs/shards_more$i --codec "$CODEC" \
        --tokenizer runs/shards/tokenizer --text-field normalized --frontend "$FRONTEND" --max-length 1024
done
# carry on the run whose weights ship (a new machine has no runs/ checkpoint to resume)
CONTINUE=()
if [ -f llasa/assets/default/lm/progress.json ]; then CONTINUE=(--continue-from llasa/assets/default/lm); fi
llasa train lm configs/lm_default.yaml "${CONTINUE[@]}"
python scripts/export_default.py --lm runs/lm_pairs3/final
# stage 2 of the codec: the GAN on the decoder only, from the shipped codec (codes unchanged),
# on all five corpora
llasa train codec configs/codec_small_gan.yaml
python scripts/export_default.py --codec runs/codec_small_gan/codec
