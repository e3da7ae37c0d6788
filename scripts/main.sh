#!/usr/bin/env bash
# The main job: set up, then unlearn 10% of scikit-learn's digits with SFR-on, with and
# without DualOptim, over 3 seeds; prints FA/RA/TA/MIA/Gap/Std (a few minutes on 2 cores).
# Extra arguments go to `dualoptim unlearn` (e.g. seeds=[0,1] or --config cifar10-resnet18).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dualoptim unlearn "$@"
