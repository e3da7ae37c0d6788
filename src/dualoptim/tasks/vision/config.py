"""The classification experiment as configured: data, model, training recipe, runs, seeds.
Plain frozen dataclasses, checked when the config loads; each method's defaults (its tuned
η_f, the options it reads) live with it in ``tasks/vision/methods/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dualoptim.config import new_option, quiet_repr, require_runs_and_seeds
from dualoptim.optim.continual import StatePolicy, check_policy, check_requests, policy_label
from dualoptim.optim.settings import Setting, SettingName, check_per_phase_lr, setting_label
from dualoptim.tasks.images.loaders import DATASETS
from dualoptim.tasks.images.models import MODELS
from dualoptim.tasks.images.train import TrainRecipe
from dualoptim.tasks.vision import methods

METRICS = ("FA", "RA", "TA", "MIA")


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    root: str | None = None
    per_class_train: int | None = None
    per_class_test: int | None = None
    forget_fraction: float | None = 0.1
    forget_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.forget_fraction is None) == (self.forget_classes is None):
            raise ValueError("set exactly one of forget_fraction and forget_classes")
        if self.forget_fraction is not None and not 0 < self.forget_fraction < 1:
            raise ValueError(f"forget_fraction must lie in (0, 1), got {self.forget_fraction}")


@dataclass(frozen=True)
class UnlearnSpec:
    """One method under one optimizer setting, with its step sizes and length. ``method`` is
    a name registered in ``tasks/vision/methods/``, which also holds its defaults."""

    method: str = "sfron"
    setting: SettingName = "dual"
    # η_f: AdamW's (dual), DO+'s (dual_plus) or the shared SGD's (joint, alternate);
    # None takes the method's tuned default (its module in tasks/vision/methods/)
    forget_lr: float | None = None
    retain_lr: float = 0.01  # η_r of the pretraining optimizer (SGD, momentum 0.9)
    plus_retain_lr: float = 1e-4  # DO+ is Adam-type on both sides
    # Alternate only: true = forget steps at η_f, retain steps at η_r (DO's step sizes);
    # false = every step at η_f; None = the method's choice (tasks/vision/methods/)
    per_phase_lr: bool | None = new_option()
    epochs: int = 5  # pass-based methods: one pass over D_f then one over D_r per epoch
    iterations: int = 300  # SFR-on: forget every 5th iteration, retain every iteration
    batch_size: int = 64
    sfron_alpha: float = 25.0
    salun_keep: float = 0.5
    eval_every: int = 0  # metric curves: evaluate every this many optimizer steps (0 = none)
    # continual runs (the experiment's ``requests``): reset, carry or carry_base (DO+) the
    # optimizer states between requests (optim/continual.py); unset = reset
    state_policy: StatePolicy | None = new_option()

    __repr__ = quiet_repr  # record ids: unset per_phase_lr leaves them as before it existed

    def __post_init__(self) -> None:
        defaults = methods.get(self.method).forget_lr  # an unknown method lists the known
        check_per_phase_lr(self.setting, self.per_phase_lr, self.method)
        if self.resolved.joint and not self.registered.retains:  # else the engine fails late
            raise ValueError(
                f"{self.method} never takes a retain step, so it has no Joint form (each Joint "
                "step sums a forget and a retain loss): run it under alternate"
            )
        for name in ("epochs", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = no curves), got {self.eval_every}")
        for name in ("retain_lr", "plus_retain_lr", "sfron_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.forget_lr is None and self.resolved.base not in defaults:
            raise ValueError(
                f"{self.method} under {self.setting!r} has no tuned default η_f: set forget_lr "
                f"(its defaults cover {sorted(defaults)})"
            )
        if self.forget_lr is not None and not self.forget_lr > 0:
            raise ValueError(f"forget_lr must be > 0 (or unset: the default), got {self.forget_lr}")
        if not 0 < self.salun_keep <= 1:
            raise ValueError(f"salun_keep must lie in (0, 1], got {self.salun_keep}")
        if self.state_policy is not None:
            check_policy(self.state_policy, self.setting)

    @property
    def label(self) -> str:
        """Alternate names its step sizes when the method takes both phases: the methods'
        defaults differ (RL/SalUn/SCRUB per phase, SFR-on one η), so a bare "alternate"
        would mean two baselines in one table."""
        both = self.registered.forgets and self.registered.retains
        per_phase = (
            self.effective_per_phase_lr if self.resolved.alternate and both else self.per_phase_lr
        )
        return policy_label(
            f"{self.method} ({setting_label(self.setting, per_phase)})", self.state_policy
        )

    @property
    def effective_state_policy(self) -> StatePolicy:
        return self.state_policy or "reset"

    @property
    def effective_forget_lr(self) -> float:
        """η_f as given, else the tuned default of this method under this setting."""
        if self.forget_lr is not None:
            return self.forget_lr
        return self.registered.forget_lr[self.resolved.base]

    @property
    def registered(self) -> methods.VisionMethod:
        return methods.get(self.method)

    @property
    def resolved(self) -> Setting:
        return Setting(self.setting)

    @property
    def effective_per_phase_lr(self) -> bool:
        """Alternate's retain phases at η_r: as ``per_phase_lr`` says, else as the method's
        official code does (RL/SalUn/SCRUB keep η_r)."""
        if self.per_phase_lr is not None:
            return self.per_phase_lr
        return self.resolved.alternate and self.registered.per_phase_lr

    @property
    def shared_lr(self) -> bool:
        """Every step at η_f: the other shared baselines' one SGD step size."""
        return self.resolved.shared and not self.effective_per_phase_lr

    @property
    def effective_retain_lr(self) -> float:
        """η_r of this setting's retain side: SGD's, or DO+'s on Adam's scale."""
        return self.plus_retain_lr if self.resolved.plus else self.retain_lr

    def used_options(self) -> frozenset[str]:
        """The fields this run reads, so a report states only those: its length (epochs of
        passes; SFR-on counts iterations), its method's own knob, η_f unless it never
        forgets, and the retain step size its optimizer takes unless it never retains."""
        method = self.registered
        used = {"method", "setting", "batch_size", "eval_every", method.length, *method.options}
        for name in ("per_phase_lr", "state_policy"):
            if getattr(self, name) is not None:
                used.add(name)
        if method.forgets or self.shared_lr:  # FT's steps are retain steps, at η_f if shared
            used.add("forget_lr")
        if method.retains and not self.shared_lr:  # GA never retains
            used.add("plus_retain_lr" if self.resolved.plus else "retain_lr")
        return frozenset(used)


@dataclass(frozen=True)
class VisionExperiment:
    task: Literal["vision"] = "vision"
    data: DataSpec = field(default_factory=DataSpec)
    model: str = "cnn"
    train: TrainRecipe = field(default_factory=TrainRecipe)
    train_seed: int = 0
    runs: tuple[UnlearnSpec, ...] = (
        UnlearnSpec("sfron", "alternate", forget_lr=0.01),
        UnlearnSpec("sfron", "dual"),
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    cache_dir: str = "results/cache/vision"
    # continual unlearning (SPEC §2.6): the forget set cut into this many requests made one
    # after another (random: equal random parts; classes: whole classes in order); unset = one
    requests: int | None = new_option()

    __repr__ = quiet_repr  # record ids: unset requests leave them as before it existed

    def __post_init__(self) -> None:
        if self.data.name not in DATASETS and not self.data.name.endswith(".npz"):
            raise ValueError(
                f"data.name {self.data.name!r} is not one of {', '.join(DATASETS)} or an .npz"
            )
        if self.model not in MODELS and not self.model.startswith("tv:"):
            raise ValueError(f"model {self.model!r} is not one of {', '.join(MODELS)}, tv:<name>")
        require_runs_and_seeds(self.runs, self.seeds)
        check_requests(self.requests, self.runs)
        classes = self.data.forget_classes
        if self.requests is not None and classes is not None and len(classes) < self.requests:
            raise ValueError(
                f"{self.requests} requests of whole classes need at least {self.requests} "
                f"forget_classes, got {len(classes)}"
            )
