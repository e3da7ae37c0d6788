"""DualOptim inside the Hugging Face ``Trainer``: :class:`DualOptimTrainer`.

For LLM users whose unlearning script is a ``transformers.Trainer``. The adapter reuses the
project's optimizer (:func:`~dualoptim.optim.settings.build_optimizer`) and phase logic
(:class:`~dualoptim.unlearn.schedule.Schedule`, :func:`~dualoptim.unlearn.schedule.objective_at`)
and the :class:`~dualoptim.unlearn.method.Method` protocol; the Trainer keeps its own loop,
data loading, LR scheduler, clipping, logging, checkpoints and resume.

One module per concern:

* :mod:`.data` -- the training set is a :class:`PairedDataset`: item ``i`` is
  ``(forget[i % n_f], retain[i % n_r])``, as long as the longer set (the shorter cycles). Every
  micro-batch thus carries a forget batch and a retain batch; an alternating step uses the half
  of its phase, a joint step both. ``train_dataset`` is refused (it is ambiguous).
* :mod:`.phases` -- the objective of an optimizer step is a pure function of
  ``state.global_step`` (the cycle of ``forget_steps`` forget steps, then ``retain_steps``
  retain steps, repeated): every micro-batch of a step is of one kind, every process agrees,
  and a resumed run continues the cycle where it stopped.
* :mod:`.optimizer` -- ``create_optimizer`` builds the dualoptim optimizer of ``setting`` over
  two parameter groups (weight decay / none on biases and norm weights). Each group's ``lr`` is
  a factor (1.0) that the Trainer's LR scheduler drives; each objective keeps its own step size
  (see :mod:`dualoptim.optim.objective`). ``max_grad_norm`` clips both phases.
* :mod:`.logs` -- per-phase losses and step sizes in the training logs.
* :mod:`.checks` -- the arguments and Trainer features refused, with the reason.
* :mod:`.trainer` -- :class:`DualOptimTrainer`, which wires these into the Trainer's hooks.

Docs: docs/hf_trainer.md.
"""

from dualoptim.integrations.hf_trainer.data import (
    ForgetRetainPair,
    PairCollator,
    PairedBatch,
    PairedDataset,
)
from dualoptim.integrations.hf_trainer.optimizer import (
    RECIPE_BETAS,
    RECIPE_EPS,
    RECIPE_LR,
    RECIPE_WEIGHT_DECAY,
    recipe_optimizer,
    recipe_values,
)
from dualoptim.integrations.hf_trainer.trainer import DualOptimTrainer

__all__ = [
    "RECIPE_BETAS",
    "RECIPE_EPS",
    "RECIPE_LR",
    "RECIPE_WEIGHT_DECAY",
    "DualOptimTrainer",
    "ForgetRetainPair",
    "PairCollator",
    "PairedBatch",
    "PairedDataset",
    "recipe_optimizer",
    "recipe_values",
]
