#!/usr/bin/env bash
# Sets up a fresh machine (venv, pinned packages, Debian's Fashion-MNIST) and runs the whole
# SP-Net recipe on Fashion-MNIST on CPU. Extra arguments go to main.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python main.py --config=configs/fashion_mnist.py --workdir=workdir/fashion_mnist "$@"
