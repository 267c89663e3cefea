#!/usr/bin/env bash
# Sets up the environment (idempotent), lints, and runs the default (non-slow) test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check spnet_jax tests configs main.py benchmarks
.venv/bin/python -m pytest -q --durations=15 "$@"
