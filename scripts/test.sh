#!/usr/bin/env bash
# Sets up the environment (idempotent), lints, and runs the default (non-slow) test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check spnet_jax tests configs main.py benchmarks
# Two workers, a test file each (module fixtures stay in one process): on 2 cores they run
# the default suite in about 17 minutes (README). SPNET_TEST_WORKERS=0 runs it in one process.
.venv/bin/python -m pytest -q -n "${SPNET_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
