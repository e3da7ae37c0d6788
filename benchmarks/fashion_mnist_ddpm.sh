#!/usr/bin/env bash
# The image-generation benchmark of record (docs/diffusion.md): a class-conditional DDPM
# U-Net on Fashion-MNIST at 16×16 on CPU, forgetting Trouser, Pullover and Bag with every run
# of configs/diffusion/fashion-mnist-ddpm.yaml, 3 seeds (~2 h on 2 idle cores). Records,
# report.md, table.csv and the sample grids go to results/benchmarks/fashion-mnist-ddpm; a
# rerun skips finished runs and resumes a killed one. The committed docs/results folder
# predates data fingerprints in records, so a reproduction writes a fresh folder beside it.
# Usage: benchmarks/fashion_mnist_ddpm.sh [key=value ...]
# The Inception-v3 side check (docs/results/fashion-mnist-ddpm-inception) was this command
# with --out elsewhere and: 'data.forget_classes=[1]' 'seeds=[1]' 'eval.inception=true'
# 'eval.inception_per_class=32' and runs = SFR-on, SFR-on+DO, SFR-on+DO at η_f 3e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/dualoptim bench --config fashion-mnist-ddpm --out results/benchmarks "$@"
