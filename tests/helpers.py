"""Test helpers: a mixed forget/retain step sequence, prescribed gradients, round trips,
a launcher for 2-process (DDP on CPU, gloo) tests, traceable toy image sets, and local
lm-eval tasks of made-up items (the downstream benchmarks' stand-ins offline)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from dualoptim.tasks.images.sets import ImageSet

#: A mixed sequence as the issue asks: F, R x5, F, R, F, F, R.
MIXED = ("forget", *["retain"] * 5, "forget", "retain", "forget", "forget", "retain")


def _shared(name: str, variable: str) -> Path:
    """A real data folder: $variable, else ../shared/data/<name> beside the checkout (where CI
    puts shared/), else this workplace's /work/shared."""
    if variable in os.environ:
        return Path(os.environ[variable])
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / name
    return beside if beside.is_dir() else Path("/work/shared/data") / name


TOFU_DIR = _shared("tofu", "DUALOPTIM_TOFU_DIR")
SAFETY_DIR = _shared("safety", "DUALOPTIM_SAFETY_DIR")


def grads_for(n: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Prescribed gradients of varied magnitude (so that Adam and SGD differ visibly)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 1, n, dtype=torch.float64)
    return [torch.randn(n, generator=gen, dtype=torch.float64) * scale for _ in range(steps)]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Serialise and reload a state dict the way a checkpoint would (weights_only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def run_ranks(script: Path, out: Path, world: int = 2, timeout: float = 300) -> list[Any]:
    """Run ``python script out`` as ``world`` processes of one torch.distributed group (the
    env:// rendezvous accelerate reads); each rank saves ``out/rank{r}.pt``, returned here."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env_base = {
        **os.environ,
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(out)],
            env={**env_base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def toy_images(labels: list[int], classes: int = 10) -> ImageSet:
    """One 1×2×2 image per label; image i holds the value i/1000 so rows can be traced."""
    n = len(labels)
    x = (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return ImageSet(x.contiguous(), torch.tensor(labels, dtype=torch.int64), classes)


# (question, choices, gold index, the index the model is taught): 3 of 4 taught right
MC = [
    ("What colour is the sky", ["blue", "green", "red"], 0, 0),
    ("What colour is grass", ["blue", "green", "red"], 1, 1),
    ("What colour is blood", ["blue", "green", "red"], 2, 2),
    ("What colour is snow", ["white", "black", "grey"], 0, 1),
]
# (question, gold answer, taught answer): 2 of 3 taught right
GEN = [
    ("Capital of France", "Paris", "Paris"),
    ("Capital of Italy", "Rome", "Rome"),
    ("Capital of Spain", "Madrid", "Lisbon"),
]
MC_YAML = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files: {{train: {data}}}
test_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
GEN_YAML = """task: toy_gen
dataset_path: json
dataset_kwargs:
  data_files: {{train: {data}}}
test_split: train
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "."]
  do_sample: false
  max_gen_toks: 8
filter_list:
  - name: remove_whitespace
    filter:
      - function: remove_whitespace
      - function: take_first
metric_list:
  - metric: exact_match
"""
TOY_DOWNSTREAM = {
    "tasks": ("toy_mc", "toy_gen"),
    "metrics": {"toy_mc": "acc,none", "toy_gen": "exact_match,remove_whitespace"},
    "batch_size": 4,
}


def write_lm_eval_tasks(folder: Path, missing_data: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mc = [{"question": q, "choices": c, "answer": a} for q, c, a, _ in MC]
    gen = [{"question": q, "answer": a} for q, a, _ in GEN]
    for name, rows, yaml in (("mc", mc, MC_YAML), ("gen", gen, GEN_YAML)):
        data = folder / f"{name}.jsonl"
        if not missing_data:
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(yaml.format(data=data))
    return folder
