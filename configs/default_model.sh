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
tokenize() {  # manifest, shard folder, extra options
    llasa data tokenize "$1" "$2" --codec "$CODEC" --text-field normalized --frontend "$FRONTEND" \
        --max-length 1024 "${@:3}"
}
tokenize runs/corpus/train.jsonl runs/shards
tokenize runs/corpus/val.jsonl runs/shards_val --tokenizer runs/shards/tokenizer
# four more 8 h corpora, each saying sentences none of the others says (more text to read keeps
# the LM from memorising sentences; past the prose pool, templates fill the rest)
previous=(runs/corpus)
for i in "" 2 3 4; do
    llasa data synth runs/corpus_more$i --hours 8 --seed $(( ${#previous[@]} )) --exclude "${previous[@]}"
    tokenize runs/corpus_more$i/train.jsonl runs/shards_more$i --tokenizer runs/shards/tokenizer
    previous+=(runs/corpus_more$i)
done
# carry on the run whose weights ship (a new machine has no runs/ checkpoint to resume)
CONTINUE=()
if [ -f llasa/assets/default/lm/progress.json ]; then CONTINUE=(--continue-from llasa/assets/default/lm); fi
llasa train lm configs/lm_default.yaml "${CONTINUE[@]}"
python scripts/export_default.py --lm runs/lm_default/final
# stage 2 of the codec: the GAN on the decoder only, from the shipped codec (codes unchanged),
# on all five corpora
llasa train codec configs/codec_small_gan.yaml
python scripts/export_default.py --codec runs/codec_small_gan/codec
