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
# DeepSpeed, only for the ZeRO tests on CPU (tests/test_scale_out.py), in a folder of its own too:
# once importable, it prints a warning on stdout in every process that imports accelerate's
# DeepSpeed support. DS_BUILD_OPS=0: its kernels are compiled on first use, not at install.
DS_BUILD_OPS=0 pip --no-deps --upgrade --target build/deepspeed "deepspeed==0.19.8" hjson ninja py-cpuinfo msgpack
