#!/usr/bin/env bash
# The main job: set up, then run the shared-vs-decoupled momentum variance study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dualoptim demo "$@"
