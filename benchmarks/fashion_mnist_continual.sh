#!/usr/bin/env bash
# The continual classification benchmark of record (docs/continual.md, issue 18): every run
# of configs/vision/fashion-mnist-continual.yaml, 5 requests of 2% random forgetting on
# Fashion-MNIST, SalUn and SFR-on × Alternate/DO/DO+ × states reset/carried, seeds 0-4 (about
# 35 min a seed on 2 idle cores). Records are written per request as they finish and a rerun
# skips them; a run killed mid-sequence resumes from its last finished request (or its
# checkpoint inside the request). Records, report.md, table.csv and requests.png go to
# results/benchmarks/fashion-mnist-continual.
# Usage: benchmarks/fashion_mnist_continual.sh [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/dualoptim bench --config fashion-mnist-continual --out results/benchmarks "$@"
