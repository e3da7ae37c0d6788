"""The diffusion task's config: the schema, and the validation that fails a bad config before
anything is trained. A method's published setting, step size and length (SPEC §2.2) live on
its registration in ``tasks/diffusion/methods/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dualoptim.config import new_option, quiet_repr, require_runs_and_seeds
from dualoptim.optim.continual import StatePolicy, check_policy, check_requests, policy_label
from dualoptim.optim.settings import (
    Setting,
    SettingName,
    check_per_phase_lr,
    check_setting,
    setting_label,
)
from dualoptim.tasks.diffusion import methods
from dualoptim.tasks.diffusion.ddpm import NoiseSchedule, SamplingSpec
from dualoptim.tasks.diffusion.models import DenoiserSpec
from dualoptim.tasks.images.train import TrainRecipe

CHECKPOINT_EVERY = 200  # steps between checkpoints of original training and of unlearning runs

SETTING_SUFFIX = {
    "dual": "+DO",
    "dual_8bit": "+DO (8-bit)",
    "dual_plus": "+DO+",
    "dual_plus_8bit": "+DO+ (8-bit)",
}


@dataclass(frozen=True)
class GenDataSpec:
    name: str = "digits"
    root: str | None = None
    image_size: int | None = None  # None: as stored (8×8 digits)
    per_class_train: int | None = None
    per_class_test: int | None = None
    forget_classes: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not self.forget_classes:
            raise ValueError("forget_classes is empty: name at least one class to forget")
        if len(set(self.forget_classes)) != len(self.forget_classes):
            raise ValueError(f"forget_classes repeats a class: {self.forget_classes}")


@dataclass(frozen=True)
class TrainSpec:
    """The original denoiser's training: Adam on the DDPM loss with label dropout."""

    iterations: int = 2000
    lr: float = 1e-3
    batch_size: int = 64
    label_dropout: float = 0.1
    clip_norm: float = 1.0
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("train.iterations and train.batch_size must be >= 1")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"train.label_dropout must lie in [0, 1), got {self.label_dropout}")
        if not self.lr > 0 or not self.clip_norm > 0:
            raise ValueError("train.lr and train.clip_norm must be > 0")


@dataclass(frozen=True)
class ClassifierSpec:
    """The data set's own classifier: FA, and the features of the always-available FID."""

    model: str = "cnn"
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=10))
    seed: int = 0


@dataclass(frozen=True)
class EvalSpec:
    """What is generated and measured after a run (numbers of images are per class)."""

    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    forget_images: int = 100  # FA: images of the forgotten class
    images_per_class: int = 50  # FID: generated images of each remaining class
    real_per_class: int = 200  # FID: real test images of each remaining class
    grid_per_class: int = 8
    inception: bool = False  # also FID on Inception-v3 features (slow on a CPU)
    inception_per_class: int = 10  # generated and real images per class for that FID
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("forget_images", "images_per_class", "real_per_class", "grid_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if min(self.forget_images, self.images_per_class, self.real_per_class) < 2:
            raise ValueError(
                "FID needs at least 2 images per class on each side "
                "(eval.forget_images, eval.images_per_class, eval.real_per_class)"
            )
        if self.inception and self.inception_per_class < 2:
            raise ValueError("eval.inception_per_class must be >= 2")
        if self.grid_per_class > min(self.forget_images, self.images_per_class):
            raise ValueError("eval.grid_per_class exceeds the images generated per class")


@dataclass(frozen=True)
class GenUnlearnSpec:
    """One method under one setting. ``iterations``: joint steps (Joint) or forget+retain
    cycles (1 : 1 otherwise). Unset values take the method's published ones (SPEC §2.2)."""

    method: str = "sfron"  # a registered method (tasks/diffusion/methods/)
    setting: SettingName | None = None  # None: as published (SA/SalUn Joint, SFR-on Alternate)
    iterations: int | None = None
    forget_lr: float | None = None
    retain_lr: float | None = None  # Optim_r's (dual settings); None: η_f
    # Alternate only: true = forget steps at η_f, retain steps at η_r (DO's step sizes);
    # false or None = every step at η_f (one Adam step size)
    per_phase_lr: bool | None = new_option()
    batch_size: int = 128
    forget_clip: float | None = 1.0  # gradient-norm clipping per phase (null: none)
    retain_clip: float | None = 1.0
    forget_weight: float = 1.0
    retain_weight: float | None = None  # None: 1e-3 for Joint SalUn (its published form), else 1
    alpha: float | None = None  # SFR-on: None = 10 with a shared optimizer, 1 with DO
    sfron_loss: Literal["ascent", "relabel"] = "ascent"
    gamma: float = 1.0  # SA: replay weight
    lam: float = 10.0  # SA: Fisher penalty weight
    replay_per_class: int = 100  # SA: the original model's samples per remaining class
    fisher_per_class: int = 10  # SA: samples per class for the Fisher
    keep: float = 0.5  # SalUn: the salient fraction
    mask_batches: int = 16  # SalUn / SFR-on: batches the mask statistics are averaged over
    label_dropout: float = 0.1  # kept in retain losses
    # continual runs (the experiment's ``requests``): reset, carry or carry_base (DO+) the
    # optimizer states between requests (optim/continual.py); unset = reset
    state_policy: StatePolicy | None = new_option()

    __repr__ = quiet_repr  # record ids: unset options leave them as before they existed

    def __post_init__(self) -> None:
        methods.get(self.method)  # a ValueError naming the registered methods
        if self.setting is not None:
            check_setting(self.setting)
        check_per_phase_lr(self.resolved_setting, self.per_phase_lr, self.method)
        for name in ("iterations", "batch_size", "replay_per_class", "fisher_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        positive = ("forget_lr", "retain_lr", "forget_clip", "retain_clip", "retain_weight")
        for name in (*positive, "alpha"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or null: the default), got {value}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must lie in (0, 1], got {self.keep}")
        if not self.forget_weight > 0:
            raise ValueError(f"forget_weight must be > 0, got {self.forget_weight}")
        if self.state_policy is not None:
            check_policy(self.state_policy, self.resolved_setting)

    @property
    def registered(self) -> methods.DiffusionMethod:
        """The method's registration: its build and its published defaults."""
        return methods.get(self.method)

    @property
    def resolved_setting(self) -> str:
        return self.setting or self.registered.setting

    @property
    def optimizer_setting(self) -> Setting:
        """What the resolved setting means (joint? shared state? DO+?)."""
        return Setting(self.resolved_setting)

    @property
    def label(self) -> str:
        """E.g. "SA", "SFR-on+DO", "SFR-on (joint)", "SFR-on (alternate, per-phase η)"; the
        method's α when it is not the default."""
        setting, name = self.resolved_setting, self.registered.label
        if setting in SETTING_SUFFIX:
            label = name + SETTING_SUFFIX[setting]
        elif setting == self.registered.setting and self.per_phase_lr is None:
            label = name
        else:
            label = f"{name} ({setting_label(setting, self.per_phase_lr)})"
        default = self._default_alpha
        if default is not None and self.alpha is not None and self.alpha != default:
            label += f" α={self.sfron_alpha:g}"
        return policy_label(label, self.state_policy)

    @property
    def effective_state_policy(self) -> StatePolicy:
        return self.state_policy or "reset"

    @property
    def effective_forget_lr(self) -> float:
        return self.forget_lr if self.forget_lr is not None else self.registered.forget_lr

    @property
    def effective_retain_lr(self) -> float:
        return self.retain_lr if self.retain_lr is not None else self.effective_forget_lr

    @property
    def steps(self) -> int:
        return self.iterations or self.registered.iterations

    @property
    def c_r(self) -> float:
        if self.retain_weight is not None:
            return self.retain_weight
        return self.registered.joint_retain_weight if self.optimizer_setting.joint else 1.0

    @property
    def _default_alpha(self) -> float | None:
        """The method's α for the resolved setting; None when it has no α."""
        return self.registered.default_alpha(self.optimizer_setting)

    @property
    def sfron_alpha(self) -> float | None:
        """The α SFR-on runs with: the spec's, or the method's default for the setting."""
        return self.alpha if self.alpha is not None else self._default_alpha


@dataclass(frozen=True)
class DiffusionExperiment:
    task: Literal["diffusion"] = "diffusion"
    data: GenDataSpec = field(default_factory=GenDataSpec)
    model: DenoiserSpec = field(default_factory=DenoiserSpec)
    noise: NoiseSchedule = field(default_factory=NoiseSchedule)
    train: TrainSpec = field(default_factory=TrainSpec)
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    runs: tuple[GenUnlearnSpec, ...] = (
        GenUnlearnSpec("sfron"),
        GenUnlearnSpec("sfron", "dual"),
    )
    seeds: tuple[int, ...] = (0,)
    cache_dir: str = "results/cache/diffusion"
    # continual unlearning (SPEC §2.6): forget_classes one after another, one class per
    # request (set it to the number of forget_classes); unset = each class from the original
    requests: int | None = new_option()

    __repr__ = quiet_repr

    def __post_init__(self) -> None:
        require_runs_and_seeds(self.runs, self.seeds)
        check_requests(self.requests, self.runs)
        classes = len(self.data.forget_classes)
        if self.requests is not None and self.requests != classes:
            raise ValueError(
                f"diffusion requests forget one class each, in the order of forget_classes: "
                f"set requests to {classes} (the number of forget_classes), not {self.requests}"
            )
