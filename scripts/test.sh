#!/usr/bin/env bash
# The tests: set up, lint, then run the whole suite (pass -m "not slow" for the quick part).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest "$@"
