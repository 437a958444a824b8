#!/usr/bin/env bash
# Install llasa with every extra (verifiers, training, serving, tests) without ever pulling a
# CUDA build of torch. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip install -q --disable-pip-version-check "$@"; }
# torch first, pinned: this exact CPU wheel is what the project is tested with
pip "torch==2.13.0"
pip -e ".[verify,train,eval,serve,test]"
# verifiers that ship their weights, whose declared dependencies would break this environment
pip --no-deps "resemblyzer==0.1.4" "speechmos==0.0.1.1" "silero-vad==6.2.3" "pocketsphinx==5.1.1"
# the official X-codec2 package, only for the equivalence tests (it pins torch 2.5 and torchaudio;
# llasa.codec.official imports it with placeholders for torchaudio and torchtune's heavy parts).
# Not torchao: once installed, every `import transformers` imports it too.
pip --no-deps "xcodec2==0.1.5" "vector-quantize-pytorch==1.17.8" "torchtune==0.6.1"
pip "einops==0.8.0" einx
