#!/usr/bin/env bash
# The safety benchmark of record (docs/safety.md, issue 19): every run of
# configs/safety/safety-mini.yaml, SmolLM2-135M-Instruct unlearning harmful compliance from 64
# safety pairs under the talk's six settings, seeds 0-2, scored offline (4-8 min a run
# on 2 idle cores, ~1 h 50 min in all). Records are written per run and a rerun skips them.
# Records, report.md, table.csv and the curves go to results/benchmarks/safety-mini.
# Usage: benchmarks/safety_mini.sh [SAFETY_DIR] [key=value ...]   (default SAFETY_DIR: ../shared/data/safety)
set -euo pipefail
cd "$(dirname "$0")/.."
safety="${1:-../shared/data/safety}"
shift || true
exec .venv/bin/dualoptim bench --config safety-mini --out results/benchmarks \
  "data.source=$safety" "$@"
