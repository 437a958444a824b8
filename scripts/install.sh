#!/usr/bin/env bash
# Install llasa with the test and verifier extras without ever pulling a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first, pinned: this exact CPU wheel is what the project is tested with
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
