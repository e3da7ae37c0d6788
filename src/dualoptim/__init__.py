"""dualoptim: stable machine unlearning with dual optimizers (DualOptim, DualOptim+)."""

import logging
import os

from dualoptim.distributed import has_gpu
from dualoptim.optim import (
    DualOptimizer,
    DualOptimPlus,
    ObjectiveOptimizer,
    OptimizerSpec,
    SharedOptimizer,
)

__version__ = "0.1.0"

# bitsandbytes, when imported on a CPU with AVX512-BF16 and without the `kernels` package, logs
# "Failed to load CPU gemm_4bit_forward from kernels-community" - about a 4-bit matmul this
# package never uses. We import it only for 8-bit optimizer states, but diffusers imports it
# eagerly whenever it is installed (its quantizers), so every diffusion run would start with
# that line. Drop that one message of that one logger; anything else it logs still shows.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")
)

# DeepSpeed (the `deepspeed` extra), when installed, is imported by accelerate's unwrap_model,
# which every run calls, and on a machine without a GPU it warns each time that it "set the
# accelerator to CPU". Where there is no GPU, tell it so up front (a value already set wins).
if not has_gpu():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

__all__ = [
    "DualOptimPlus",
    "DualOptimizer",
    "ObjectiveOptimizer",
    "OptimizerSpec",
    "SharedOptimizer",
    "__version__",
]
