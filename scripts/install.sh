#!/usr/bin/env bash
# Install llasa with every extra (verifiers, training, evaluation, serving, tests) without ever
# pulling a CUDA build of torch. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python -m pip install -q --disable-pip-version-check "$@"; }
# torch first, pinned: this exact CPU wheel is what the project is tested with
pip "torch==2.13.0"
pip -e ".[verify,train,eval,serve,test]"
# The official X-codec2 package is only a reference for the equivalence tests and bench/codec.py.
# It pins torch 2.5 and torchaudio, so it goes into a folder of its own without its dependencies
# (llasa.codec.official puts that folder on the path): site-packages stays consistent (`pip check`).
pip --no-deps --upgrade --target build/official "xcodec2==0.1.5" "vector-quantize-pytorch==1.17.8" "torchtune==0.6.1"
pip "einops==0.8.0" einx
