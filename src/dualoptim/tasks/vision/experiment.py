"""Image-classification unlearning end to end: data, original model, RT, methods, metrics.

One original model per data set and training seed; one forget set and one RT per seed (SPEC
§3.1: each seed draws its own forget set and RT). Original and RT weights are cached as
safetensors under ``cache_dir``, keyed by the content of the data they were trained on and
everything else that determines them, with RT's metrics beside them, so reference numbers
are always measured, never typed in, and a data file replaced at the same path retrains.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualoptim.io import cached_state, fingerprint, read_json, write_json
from dualoptim.optim.continual import carry_states
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.images.models import build_model
from dualoptim.tasks.images.sets import ImageData
from dualoptim.tasks.images.train import ImageSource, train_classifier
from dualoptim.tasks.vision import methods
from dualoptim.tasks.vision.config import UnlearnSpec, VisionExperiment
from dualoptim.tasks.vision.metrics import evaluate
from dualoptim.tasks.vision.splits import ForgetSplit, make_forget_split
from dualoptim.unlearn import EngineConfig, RunState, unlearn
from dualoptim.unlearn.engine import Evaluate

CURVE_SAMPLE = 2000  # rows of D_r and of D_test evaluated for each point of a curve
CHECKPOINT_EVERY = 50  # optimizer steps between a continual request's checkpoints


@dataclass
class World:
    """Everything one seed's runs share."""

    data: ImageData
    split: ForgetSplit
    original: nn.Module
    rt_metrics: dict[str, float]
    rt_seconds: float
    mask_prefix: Path | None = None  # masks depend on (original model, forget set) only

    def mask_path(self, *options: Any) -> Path | None:
        if self.mask_prefix is None:
            return None
        name = f"{self.mask_prefix.name}-{fingerprint(*options)}.safetensors"
        return self.mask_prefix.with_name(name)

    @property
    def sources(self) -> tuple[ImageSource, ImageSource]:
        f, r = self.data.train.subset(self.split.forget), self.data.train.subset(self.split.retain)
        return ImageSource(f.x, f.y), ImageSource(r.x, r.y)


def _new_model(exp: VisionExperiment, data: ImageData, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    _, channels, size, _ = data.train.x.shape
    return build_model(exp.model, in_channels=channels, classes=data.train.classes, image_size=size)


def _trained(
    exp: VisionExperiment,
    data: ImageData,
    source: ImageSource,
    seed: int,
    path: Path,
    progress: bool = False,
) -> tuple[nn.Module, float]:
    """A model trained on ``source``, loaded from ``path`` when cached; (model, seconds)."""
    model = _new_model(exp, data, seed)

    def build() -> dict[str, torch.Tensor]:
        train_classifier(model, source, exp.train, seed=seed, progress=progress)
        return model.state_dict()

    state, seconds = cached_state(path, build)
    model.load_state_dict(state)
    return model, seconds


def load_experiment_data(exp: VisionExperiment) -> ImageData:
    d = exp.data
    return load_data(
        d.name, d.root, per_class_train=d.per_class_train, per_class_test=d.per_class_test
    )


def _original_key(exp: VisionExperiment, data: ImageData) -> str:
    """The training set's content, the model, the recipe and the seed (not the data's path)."""
    return fingerprint(data.train.fingerprint, exp.model, exp.train, exp.train_seed)


def original_model(
    exp: VisionExperiment, data: ImageData, progress: bool = False
) -> tuple[nn.Module, float]:
    """The model trained on all of D_train (cached): (model, training seconds)."""
    source = ImageSource(data.train.x, data.train.y)
    path = Path(exp.cache_dir) / f"original-{_original_key(exp, data)}.safetensors"
    return _trained(exp, data, source, exp.train_seed, path, progress)


def forget_split(exp: VisionExperiment, data: ImageData, seed: int) -> ForgetSplit:
    d = exp.data
    return make_forget_split(
        data.train, fraction=d.forget_fraction, classes=d.forget_classes, seed=seed
    )


def reference_key(exp: VisionExperiment, data: ImageData, seed: int) -> str:
    """Everything that determines RT of ``seed`` and its record: the data's content, the
    forget set recipe, model, training."""
    return fingerprint(data.fingerprint, exp.data, exp.model, exp.train, seed)


def _rt_path(exp: VisionExperiment, data: ImageData, split: ForgetSplit, seed: int) -> Path:
    """RT depends on the retain rows' content, the model, the recipe and its seed."""
    retain = data.train.subset(split.retain).fingerprint
    return Path(exp.cache_dir) / f"rt-{fingerprint(retain, exp.model, exp.train, seed)}.safetensors"


def retrained_model(
    exp: VisionExperiment, data: ImageData, split: ForgetSplit, seed: int, progress: bool = False
) -> tuple[nn.Module, float]:
    """RT: trained from scratch on this forget set's D_r (cached): (model, seconds)."""
    retain = data.train.subset(split.retain)
    source = ImageSource(retain.x, retain.y)
    return _trained(exp, data, source, seed, _rt_path(exp, data, split, seed), progress)


def rt_reference(
    exp: VisionExperiment, data: ImageData, split: ForgetSplit, seed: int, progress: bool = False
) -> tuple[dict[str, float], float]:
    """RT's metrics and training seconds: a reference record measured once per forget set
    and read back afterwards (never typed in). Its metrics also measure D_f and D_t, so the
    file is keyed by all the data and the forget rows as well as by RT."""
    rt = _rt_path(exp, data, split, seed)
    record = rt.with_name(f"{rt.stem}.metrics-{fingerprint(data.fingerprint, split.forget)}.json")
    if record.exists():
        saved = read_json(record, ("metrics", "seconds"))
        return saved["metrics"], float(saved["seconds"])
    model, seconds = retrained_model(exp, data, split, seed, progress)
    metrics = evaluate_model(model, data, split)
    write_json(record, {"forget_set": split.description, "metrics": metrics, "seconds": seconds})
    return metrics, seconds


def prepare(
    exp: VisionExperiment, seed: int, data: ImageData | None = None, progress: bool = False
) -> World:
    """Data, this seed's forget set, the (cached) original model and RT's metrics."""
    data = data if data is not None else load_experiment_data(exp)
    split = forget_split(exp, data, seed)
    original, _ = original_model(exp, data, progress)
    rt_metrics, rt_seconds = rt_reference(exp, data, split, seed, progress)
    return World(data, split, original, rt_metrics, rt_seconds, mask_prefix(exp, data, split))


def mask_prefix(exp: VisionExperiment, data: ImageData, split: ForgetSplit) -> Path:
    """Where the original model's masks for this forget set are cached: they depend on that
    model and the forget rows only."""
    masks = fingerprint(_original_key(exp, data), split.forget)
    return Path(exp.cache_dir) / f"mask-{masks}"


def evaluate_model(model: nn.Module, data: ImageData, split: ForgetSplit) -> dict[str, float]:
    return evaluate(
        model, data.train.x, data.train.y, split.forget, split.retain, data.test.x, data.test.y
    )


def build_run(spec: UnlearnSpec, world: World, seed: int) -> methods.Built:
    """(method, schedule, engine options) of ``spec`` on this seed's data."""
    return spec.registered.build(spec, world, seed)


def make_optimizer(
    spec: UnlearnSpec, params: Iterable[nn.Parameter], plus: Mapping[str, Any] | None = None
) -> ObjectiveOptimizer:
    """The setting's optimizer: AdamW(η_f, wd 0.05) for forgetting, SGD(η_r, momentum 0.9,
    wd 5e-4) for retaining; the shared baselines use that SGD at η_f, except that Alternate
    RL/SalUn/SCRUB keep η_r for retain phases as the official classification code does (a
    run's ``per_phase_lr`` decides it for any method).
    ``plus``: extra DualOptimPlus options (benchmarks/plus_bound.py compares bound_update)."""
    return build_optimizer(
        spec.setting,
        params,
        forget={"name": "adamw", "weight_decay": 0.05},
        retain={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
        forget_lr=spec.effective_forget_lr,
        retain_lr=spec.effective_retain_lr,
        per_phase_lr=spec.effective_per_phase_lr,
        plus=plus,
    )


def curve_evaluator(world: World, seed: int, limit: int = CURVE_SAMPLE) -> Evaluate:
    """FA, RA, TA and MIA during unlearning, for metric curves (paper Fig. 1). All of D_f,
    but at most ``limit`` seeded rows of D_r and of D_test, so curves stay cheap on big sets;
    the final metrics are always measured on everything."""
    generator = torch.Generator().manual_seed(seed)
    retain = world.split.retain
    retain = retain[torch.randperm(len(retain), generator=generator)[:limit]]
    test = torch.randperm(len(world.data.test), generator=generator)[:limit]
    test_x, test_y = world.data.test.x[test], world.data.test.y[test]
    train = world.data.train

    def measure(model: nn.Module, _run: RunState) -> dict[str, float]:
        return evaluate(
            model, train.x, train.y, world.split.forget, retain, test_x, test_y, efficacy=False
        )

    return measure


@dataclass
class Unlearned:
    """A run's model and optimizer as it left them, its seconds and its curves."""

    model: nn.Module
    optimizer: ObjectiveOptimizer
    seconds: float
    curves: dict[str, list[list[float]]]


def unlearned(
    spec: UnlearnSpec,
    world: World,
    seed: int,
    plus: Mapping[str, Any] | None = None,
    *,
    states: Mapping[str, Any] | None = None,
    checkpoint_dir: Path | None = None,
) -> Unlearned:
    """Unlearn with ``spec`` from ``world.original`` (a copy). ``states``: an optimizer state
    dict to start from, as ``spec.state_policy`` says (a continual request's predecessor);
    ``checkpoint_dir``: checkpoint there every :data:`CHECKPOINT_EVERY` steps and resume."""
    model = copy.deepcopy(world.original)
    method, schedule, options = build_run(spec, world, seed)
    optimizer = make_optimizer(spec, model.parameters(), plus)
    if states is not None:
        carry_states(optimizer, states, spec.effective_state_policy)
    config = EngineConfig(
        schedule,
        forget_batch=spec.batch_size,
        retain_batch=spec.batch_size,
        joint=spec.resolved.joint,
        seed=seed,
        eval_every=spec.eval_every,
        record_grad_norms=True,
        progress=False,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY if checkpoint_dir is not None else 0,
        **options,
    )
    forget, retain = world.sources
    evaluator = curve_evaluator(world, seed) if spec.eval_every else None
    start = time.perf_counter()
    result = unlearn(model, method, forget, retain, optimizer, config, evaluate=evaluator)
    # a resumed run's engine counts the time before the interruption too
    seconds = time.perf_counter() - start if result.resumed_from_step is None else result.seconds
    curves = {name: [list(point) for point in points] for name, points in result.curves.items()}
    return Unlearned(model, optimizer, seconds, curves)


def run_unlearning(
    spec: UnlearnSpec, world: World, seed: int, plus: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Unlearn with ``spec`` from this seed's original model: final metrics, ``seconds``, and
    ``curves`` ({name: [[step, value], ...]}: losses, gradient norms, and the metrics every
    ``spec.eval_every`` steps). ``plus`` as in :func:`make_optimizer`."""
    done = unlearned(spec, world, seed, plus)
    metrics = evaluate_model(done.model, world.data, world.split)
    return {**metrics, "seconds": done.seconds, "curves": done.curves}
