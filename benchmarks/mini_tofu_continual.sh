#!/usr/bin/env bash
# The continual LLM benchmark of record (docs/continual.md, issue 18): every run of
# configs/llm/mini-tofu-continual.yaml, forget05 as 5 requests of 2 authors with
# SmolLM2-135M-Instruct, ME+GD × Joint/Alternate/DO/DO+ × states reset/carried, seeds 0-1
# (about 3 h 20 min a seed on 2 idle cores, plus ~18 min once for the target). Records are
# written per request and a rerun skips them. Records, report.md, table.csv and requests.png
# go to results/benchmarks/mini-tofu-continual.
# Usage: benchmarks/mini_tofu_continual.sh [TOFU_DIR] [key=value ...]   (default TOFU_DIR: ../shared/data/tofu)
set -euo pipefail
cd "$(dirname "$0")/.."
tofu="${1:-../shared/data/tofu}"
shift || true
exec .venv/bin/dualoptim bench --config mini-tofu-continual --out results/benchmarks \
  "data.source=$tofu" "$@"
