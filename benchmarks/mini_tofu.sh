#!/usr/bin/env bash
# The LLM benchmark of record (docs/llm.md): mini-TOFU, real TOFU data with
# SmolLM2-135M-Instruct on CPU, every run of configs/llm/mini-tofu.yaml (Alternate with one
# η and per phase) at the paper's step size ×1, ×3 and ×10, seeds 0-2 (issue 16). About
# 8 h on 2 idle cores (~50 min per seed and multiple, plus ~20 min once for the target and
# retain models, which every seed shares); records are written as runs finish and a rerun
# skips them, so it can run in pieces. Two one-thread processes split by runs=[...]
# (docs/benchmarks.md) did about 15 runs an hour together, no more than one two-thread
# process: SmolLM2's matrix products use both cores well. Records, report.md and table.csv
# go to results/benchmarks/mini-tofu.
# Usage: benchmarks/mini_tofu.sh [TOFU_DIR] [key=value ...]   (default TOFU_DIR: ../shared/data/tofu)
set -euo pipefail
cd "$(dirname "$0")/.."
tofu="${1:-../shared/data/tofu}"
shift || true
exec .venv/bin/dualoptim bench --config mini-tofu --out results/benchmarks "data.source=$tofu" \
  --grid 1 3 10 'seeds=[0,1,2]' "$@"
