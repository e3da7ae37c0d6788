"""The LLM task's config: the TOFU rows, the base model, the fine-tuning recipe of the
references, the unlearning runs with SPEC §1.3's defaults, and the validation that fails a
bad config before anything is trained."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dualoptim.config import new_option, quiet_repr, require_runs_and_seeds
from dualoptim.optim.continual import StatePolicy, check_policy, check_requests, policy_label
from dualoptim.optim.settings import Setting, SettingName, check_per_phase_lr, setting_label
from dualoptim.tasks.llm.data import FORGET_SPLITS
from dualoptim.tasks.llm.downstream import DownstreamOptions
from dualoptim.tasks.llm.evaluation import EvalOptions
from dualoptim.tasks.llm.format import PromptFormat
from dualoptim.tasks.llm.methods import LLMMethod, LossOptions
from dualoptim.tasks.llm.models import LLAMA_LINEAR, TINY, TinySpec


@dataclass(frozen=True)
class TofuData:
    source: str | None = None  # None: the built-in generator; "hub"; or a local directory
    forget_split: str = "forget01"
    # retain rows used: the first N rows of the retain split (fine-tuning); the retain
    # evaluation is retain_perturbed's rows among them (its first N, or all of it when it
    # has fewer: it is the retain split's first rows). None: the whole retain split
    retain_rows: int | None = None
    refusal_seed: int = 0

    def __post_init__(self) -> None:
        if self.forget_split not in FORGET_SPLITS:
            raise ValueError(
                f"forget_split {self.forget_split!r} is not one of {', '.join(FORGET_SPLITS)}"
            )
        if self.retain_rows is not None and self.retain_rows < 1:
            raise ValueError(f"retain_rows must be >= 1 (or null: all), got {self.retain_rows}")


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters (peft) on the fine-tuned target: unlearning trains only them, so the
    optimizers keep states for the adapters alone. The target and the retain model are still
    fine-tuned in full (they are references, not what is unlearned)."""

    r: int = 8
    alpha: float = 16.0  # the adapters' output is scaled by alpha / r
    dropout: float = 0.0
    # names of linear modules (the last part of a module's name, or a dotted tail of it);
    # the default is every projection of a Llama-style block (SmolLM2, Llama-2, tiny-llama)
    target_modules: tuple[str, ...] = LLAMA_LINEAR

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1 (the adapters' rank), got {self.r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must lie in [0, 1), got {self.dropout}")
        if not self.target_modules or not all(self.target_modules):
            raise ValueError(
                "lora.target_modules must name at least one linear module (e.g. q_proj), "
                f"got {list(self.target_modules)}"
            )


@dataclass(frozen=True)
class ModelSpec:
    name: str = TINY  # tiny-llama, smollm2-135m-instruct, a Hub id or a local folder
    dtype: Literal["float32", "bfloat16"] = "float32"
    prompt: PromptFormat = field(default_factory=PromptFormat)
    tiny: TinySpec = field(default_factory=TinySpec)
    lora: LoraSpec | None = new_option()  # None: unlearning trains every weight

    @property
    def finetuned(self) -> dict[str, Any]:
        """The fields that make the fine-tuned target and retain model: all but ``lora``,
        which applies to unlearning only. Hashed like the dataclass was before ``lora``
        existed, so the caches and record ids of configs without LoRA did not change."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lora"}


@dataclass(frozen=True)
class FinetuneRecipe:
    """How the target and the retain model learn TOFU (TOFU's: 5 epochs, AdamW 1e-5, wd
    0.01, warm-up one epoch, batch 32)."""

    epochs: int = 5
    lr: float = 1e-5
    batch_size: int = 32
    accumulation: int = 1
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"finetune.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class LLMUnlearnSpec:
    """One method under one optimizer setting (SPEC §1.3's LLM row as the defaults).

    An epoch is one pass over D_f: each forget step is followed by ``retain_steps`` retain
    steps (1 : 5). Joint makes one step per forget batch paired with a retain batch, so it
    takes fewer optimizer steps (reported).
    """

    method: str = "me+gd"
    setting: SettingName = "dual"
    forget_lr: float | None = None  # None: the forget loss's default (1e-5; DPO 1.5e-5)
    retain_lr: float = 1e-5
    # Alternate only: true = forget steps at η_f, retain steps at η_r (DO's step sizes);
    # false or None = every step at η_f (one AdamW step size)
    per_phase_lr: bool | None = new_option()
    epochs: int = 5
    warmup_epochs: float = 1.0  # linear warm-up, then linear decay to 0 (SPEC: one epoch)
    forget_steps: int = 1
    retain_steps: int = 5
    batch_size: int = 4  # per side; the paper's effective batch is 40
    accumulation: int = 1
    forget_weight: float | None = None  # c_f; None: 1; Joint: the loss's (ME/NPO/DPO 0.1)
    retain_weight: float = 1.0
    clip_norm: float = 1.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    losses: LossOptions = field(default_factory=LossOptions)
    eval_every: int = 0  # forget/retain Prob every this many optimizer steps (0: none)
    # continual runs (the experiment's ``requests``): reset, carry or carry_base (DO+) the
    # optimizer states between requests (optim/continual.py); unset = reset
    state_policy: StatePolicy | None = new_option()

    __repr__ = quiet_repr  # record ids: unset options leave them as before they existed

    def __post_init__(self) -> None:
        LLMMethod(self.method)  # validates the name
        Setting(self.setting)  # validates the name
        check_per_phase_lr(self.setting, self.per_phase_lr, self.method)
        for name in ("epochs", "forget_steps", "batch_size", "accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs], got {self.warmup_epochs}")
        if self.retain_steps < 0 or self.eval_every < 0:
            raise ValueError("retain_steps and eval_every must be >= 0")
        for name in ("retain_lr", "clip_norm", "retain_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("forget_lr", "forget_weight"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or null: the default), got {value}")
        if self.state_policy is not None:
            check_policy(self.state_policy, self.setting)
        if LLMMethod(self.method).retain is None and self.retain_steps:
            raise ValueError(
                f"{self.method} has no retain loss: set retain_steps=0 (or add +gd/+kl/+ap)"
            )

    @property
    def label(self) -> str:
        label = f"{self.method.upper()} ({setting_label(self.setting, self.per_phase_lr)})"
        return policy_label(label, self.state_policy)

    @property
    def effective_state_policy(self) -> StatePolicy:
        return self.state_policy or "reset"

    @property
    def effective_forget_lr(self) -> float:
        if self.forget_lr is not None:
            return self.forget_lr
        return LLMMethod(self.method).forget_objective.forget_lr

    @property
    def c_f(self) -> float:
        if self.forget_weight is not None:
            return self.forget_weight
        if not Setting(self.setting).joint:
            return 1.0
        return LLMMethod(self.method).forget_objective.joint_forget_weight


@dataclass(frozen=True)
class Requests:
    """Continual unlearning (SPEC §2.6): the forget split cut into ``count`` requests of
    whole authors (``group_rows`` consecutive rows each: TOFU's 20 questions per author),
    made one after another. ``reference``: the frozen model NPO/DPO/KL compare with, the
    target (``original``) or the model the previous request left (``previous``, what
    reloading the previous model as Closer-Look's code does amounts to)."""

    count: int = 5
    group_rows: int = 20
    reference: Literal["original", "previous"] = "previous"

    def __post_init__(self) -> None:
        if self.group_rows < 1:
            raise ValueError(f"requests.group_rows must be >= 1, got {self.group_rows}")
        if self.reference not in ("original", "previous"):
            raise ValueError(
                f"requests.reference must be 'original' or 'previous', got {self.reference!r}"
            )


def check_continual(
    requests: Requests | None, runs: tuple[LLMUnlearnSpec, ...], model: ModelSpec
) -> None:
    """An LLM config's requests against its runs (state policies need requests) and model."""
    check_requests(None if requests is None else requests.count, runs)
    if requests is not None and model.lora is not None:
        raise ValueError(
            "requests with model.lora: each request would need the previous request's "
            "adapters merged or carried, which is not built; unlearn all weights"
        )


@dataclass(frozen=True)
class LLMExperiment:
    task: Literal["llm"] = "llm"
    data: TofuData = field(default_factory=TofuData)
    model: ModelSpec = field(default_factory=ModelSpec)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    eval: EvalOptions = field(default_factory=EvalOptions)
    embedder: str | None = None  # Closer-Look cosine: "minilm" (offline copy), a Hub id, or none
    entailment: str | None = new_option()  # Closer-Look entailment: NLI model (Hub id or folder)
    downstream: DownstreamOptions | None = new_option()  # lm-eval benchmarks of each model
    runs: tuple[LLMUnlearnSpec, ...] = (LLMUnlearnSpec("me+gd", "alternate"), LLMUnlearnSpec())
    seeds: tuple[int, ...] = (0,)
    cache_dir: str = "results/cache/llm"
    requests: Requests | None = new_option()  # continual unlearning; unset = one request

    __repr__ = quiet_repr

    def __post_init__(self) -> None:
        require_runs_and_seeds(self.runs, self.seeds)
        check_continual(self.requests, self.runs, self.model)
