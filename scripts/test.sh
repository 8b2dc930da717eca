#!/usr/bin/env bash
# Install (if needed) and run the checks: ruff, mypy, then the offline test suite.
# Arguments go to pytest: bash scripts/test.sh -m "not slow" is the quick tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
ruff check pagelens tests benchmarks
ruff format --check pagelens tests benchmarks
mypy
python -m pytest -q "$@"
