#!/usr/bin/env bash
# The real-world benchmark of record (docs/realworld.md, issue 17): SmolLM2-135M-Instruct
# (offline copy) on the built-in set of real people, probed first ("does it know them?"),
# ME+GD and IDK+GD under Joint, Alternate, DO, DO-8bit, DO+, DO+-8bit, seeds 0-2: every run
# of configs/realworld/realworld-mini.yaml. Records are written as runs finish and a rerun
# skips them, so it can run in pieces. Downstream utility (lm-eval) needs the benchmarks'
# data from the Hub: offline the records say "not available offline". Records, report.md and
# table.csv go to results/benchmarks/realworld-mini.
# Usage: benchmarks/realworld_mini.sh [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/dualoptim bench --config realworld-mini --out results/benchmarks "$@"
