#!/usr/bin/env bash
# Sets up a fresh machine (venv, pinned packages, Debian's Fashion-MNIST) and runs the whole
# SP-Net recipe on Fashion-MNIST on CPU. Extra arguments go to main.py.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh requirements.txt
# Two XLA CPU devices, the batch split over them (data parallel, as on a TPU slice): on 2 cores
# the steps run 1.2-1.35x faster than on one device (batches stay multiples of 2).
devices=$(( $(nproc) >= 2 ? 2 : 1 ))
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=$devices}"
.venv/bin/python main.py --config=configs/fashion_mnist.py --workdir=workdir/fashion_mnist "$@"
echo "quickstart: $(( $(date +%s) - start )) s wall, setup included."
