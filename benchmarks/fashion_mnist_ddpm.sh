#!/usr/bin/env bash
# The image-generation benchmark of record (docs/diffusion.md): a class-conditional DDPM
# U-Net on Fashion-MNIST at 16×16 on CPU, forgetting Trouser, Pullover and Bag with every run
# of configs/diffusion/fashion-mnist-ddpm.yaml, one seed. Records, report.md, table.csv and
# the sample grids go to docs/results/fashion-mnist-ddpm; a rerun skips finished runs.
# Usage: benchmarks/fashion_mnist_ddpm.sh [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/dualoptim bench --config fashion-mnist-ddpm --out docs/results "$@"
