#!/usr/bin/env bash
# The LLM benchmark of record (docs/llm.md): mini-TOFU, real TOFU data with
# SmolLM2-135M-Instruct on CPU, every run of configs/llm/mini-tofu.yaml at the paper's step
# size (×1) and at ten times it (×10), one seed. Records, report.md and table.csv go to
# results/benchmarks/mini-tofu (the committed docs/results/mini-tofu predates data
# fingerprints in records); a rerun skips finished runs.
# Usage: benchmarks/mini_tofu.sh [TOFU_DIR] [key=value ...]   (default TOFU_DIR: ../shared/data/tofu)
set -euo pipefail
cd "$(dirname "$0")/.."
tofu="${1:-../shared/data/tofu}"
shift || true
exec .venv/bin/dualoptim bench --config mini-tofu --out results/benchmarks "data.source=$tofu" \
  --grid 1 10 "$@"
