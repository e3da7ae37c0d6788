"""Image-classification unlearning end to end: data, original model, RT, methods, metrics.

One original model per data set and training seed; one forget set and one RT per seed (SPEC
§3.1: each seed draws its own forget set and RT). Original and RT weights are cached as
safetensors under ``cache_dir``, keyed by a hash of everything that determines them, with
RT's metrics beside them, so reference numbers are always measured, never typed in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from rich.progress import Progress
from rich.table import Table
from safetensors.torch import load_file
from torch import nn

from dualoptim.config import to_dict
from dualoptim.io import write_json, write_tensors
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.vision.data import (
    DATASETS,
    ForgetSplit,
    ImageData,
    load_data,
    make_forget_split,
)
from dualoptim.tasks.vision.methods import FT, GA, RL, SCRUB, ImageSource, SalUn, SFRon
from dualoptim.tasks.vision.metrics import evaluate, gap_and_std
from dualoptim.tasks.vision.models import MODELS, build_model
from dualoptim.tasks.vision.train import TrainRecipe, train_classifier
from dualoptim.unlearn import EngineConfig, PhaseOptions, Schedule, unlearn

MethodName = Literal["ft", "ga", "rl", "salun", "scrub", "sfron"]
SettingName = Literal["joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit"]
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
    """One method under one optimizer setting, with its step sizes and length."""

    method: MethodName = "sfron"
    setting: SettingName = "dual"
    forget_lr: float = 1e-3  # η_f: AdamW's (dual settings) or the shared SGD's (alternate)
    retain_lr: float = 0.01  # η_r of the pretraining optimizer (SGD, momentum 0.9)
    plus_retain_lr: float = 1e-4  # DO+ is Adam-type on both sides
    epochs: int = 5  # pass-based methods: one pass over D_f then one over D_r per epoch
    iterations: int = 300  # SFR-on: forget every 5th iteration, retain every iteration
    batch_size: int = 64
    sfron_alpha: float = 25.0
    salun_keep: float = 0.5

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("forget_lr", "retain_lr", "plus_retain_lr", "sfron_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.salun_keep <= 1:
            raise ValueError(f"salun_keep must lie in (0, 1], got {self.salun_keep}")

    @property
    def label(self) -> str:
        return f"{self.method} ({self.setting})"


@dataclass(frozen=True)
class VisionExperiment:
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

    def __post_init__(self) -> None:
        if self.data.name not in DATASETS and not self.data.name.endswith(".npz"):
            raise ValueError(
                f"data.name {self.data.name!r} is not one of {', '.join(DATASETS)} or an .npz"
            )
        if self.model not in MODELS and not self.model.startswith("tv:"):
            raise ValueError(f"model {self.model!r} is not one of {', '.join(MODELS)}, tv:<name>")
        if not self.seeds:
            raise ValueError("seeds is empty")
        if not self.runs:
            raise ValueError("runs is empty: name at least one method and setting")


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
        return self.mask_prefix.with_name(f"{self.mask_prefix.name}-{_key(*options)}.safetensors")

    @property
    def sources(self) -> tuple[ImageSource, ImageSource]:
        f, r = self.data.train.subset(self.split.forget), self.data.train.subset(self.split.retain)
        return ImageSource(f.x, f.y), ImageSource(r.x, r.y)


def _key(*parts: Any) -> str:
    text = json.dumps(
        [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _new_model(exp: VisionExperiment, data: ImageData, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    _, channels, size, _ = data.train.x.shape
    return build_model(exp.model, in_channels=channels, classes=data.train.classes, image_size=size)


def _trained(
    exp: VisionExperiment, data: ImageData, source: ImageSource, seed: int, path: Path
) -> tuple[nn.Module, float]:
    """A model trained on ``source``, loaded from ``path`` when cached; (model, seconds)."""
    model = _new_model(exp, data, seed)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        model.load_state_dict(load_file(path))
        return model, float(json.loads(meta.read_text())["seconds"])
    start = time.perf_counter()
    train_classifier(model, source, exp.train, seed=seed)
    seconds = time.perf_counter() - start
    write_tensors(path, model.state_dict())
    write_json(meta, {"seconds": seconds})
    return model, seconds


def load_experiment_data(exp: VisionExperiment) -> ImageData:
    d = exp.data
    return load_data(
        d.name, d.root, per_class_train=d.per_class_train, per_class_test=d.per_class_test
    )


def _original_key(exp: VisionExperiment) -> str:
    d = exp.data
    return _key((d.name, d.per_class_train, d.per_class_test), exp.model, exp.train, exp.train_seed)


def original_model(exp: VisionExperiment, data: ImageData) -> tuple[nn.Module, float]:
    """The model trained on all of D_train (cached): (model, training seconds)."""
    source = ImageSource(data.train.x, data.train.y)
    path = Path(exp.cache_dir) / f"original-{_original_key(exp)}.safetensors"
    return _trained(exp, data, source, exp.train_seed, path)


def forget_split(exp: VisionExperiment, data: ImageData, seed: int) -> ForgetSplit:
    d = exp.data
    return make_forget_split(
        data.train, fraction=d.forget_fraction, classes=d.forget_classes, seed=seed
    )


def _rt_path(exp: VisionExperiment, split: ForgetSplit) -> Path:
    d = exp.data
    key = _key(
        (d.name, d.per_class_train, d.per_class_test), exp.model, exp.train, split.description
    )
    return Path(exp.cache_dir) / f"rt-{key}.safetensors"


def retrained_model(
    exp: VisionExperiment, data: ImageData, split: ForgetSplit, seed: int
) -> tuple[nn.Module, float]:
    """RT: trained from scratch on this forget set's D_r (cached): (model, seconds)."""
    retain = data.train.subset(split.retain)
    source = ImageSource(retain.x, retain.y)
    return _trained(exp, data, source, seed, _rt_path(exp, split))


def rt_reference(
    exp: VisionExperiment, data: ImageData, split: ForgetSplit, seed: int
) -> tuple[dict[str, float], float]:
    """RT's metrics and training seconds: a reference record measured once per forget set
    and read back afterwards (never typed in)."""
    record = _rt_path(exp, split).with_suffix(".metrics.json")
    if record.exists():
        saved = json.loads(record.read_text())
        return saved["metrics"], float(saved["seconds"])
    rt, seconds = retrained_model(exp, data, split, seed)
    metrics = evaluate_model(rt, data, split)
    write_json(record, {"forget_set": split.description, "metrics": metrics, "seconds": seconds})
    return metrics, seconds


def prepare(exp: VisionExperiment, seed: int, data: ImageData | None = None) -> World:
    """Data, this seed's forget set, the (cached) original model and RT's metrics."""
    data = data if data is not None else load_experiment_data(exp)
    split = forget_split(exp, data, seed)
    original, _ = original_model(exp, data)
    rt_metrics, rt_seconds = rt_reference(exp, data, split, seed)
    prefix = Path(exp.cache_dir) / f"mask-{_key(_original_key(exp), split.description)}"
    return World(data, split, original, rt_metrics, rt_seconds, prefix)


def evaluate_model(model: nn.Module, data: ImageData, split: ForgetSplit) -> dict[str, float]:
    return evaluate(
        model, data.train.x, data.train.y, split.forget, split.retain, data.test.x, data.test.y
    )


def build_run(spec: UnlearnSpec, world: World, seed: int):
    """(method, schedule, engine options) of ``spec`` on this seed's data."""
    forget, retain = world.sources
    classes = world.data.train.classes
    options: dict[str, Any] = {}
    if spec.method == "ft":
        return FT(), Schedule(spec.epochs, forget_steps=0), options
    if spec.method == "ga":
        return GA(), Schedule(spec.epochs, retain_steps=0), options
    if spec.method == "sfron":
        options = {"forget": PhaseOptions(clip_norm=7.0), "lr_schedule": "cosine"}
        method = SFRon(
            forget=forget,
            retain=retain,
            alpha=spec.sfron_alpha,
            batch_size=spec.batch_size,
            mask_cache=world.mask_path("sfron", spec.batch_size),
        )
        return method, Schedule(max(1, spec.iterations // 5), 1, 5), options
    if spec.method == "rl":
        return RL(len(forget), classes, seed=seed), Schedule(spec.epochs), options
    if spec.method == "salun":
        method = SalUn(
            len(forget),
            classes,
            seed=seed,
            forget=forget,
            retain=retain,
            keep=spec.salun_keep,
            mask_cache=world.mask_path("salun", "difference", spec.salun_keep, spec.batch_size),
            batch_size=spec.batch_size,
        )
        return method, Schedule(spec.epochs), options
    if spec.method == "scrub":
        return SCRUB(), Schedule(spec.epochs), options
    raise ValueError(f"unknown method {spec.method!r}")


def run_unlearning(spec: UnlearnSpec, world: World, seed: int) -> dict[str, float]:
    """Unlearn with ``spec`` from this seed's original model; metrics plus seconds."""
    model = copy.deepcopy(world.original)
    method, schedule, options = build_run(spec, world, seed)
    per_phase = spec.setting == "alternate" and spec.method in ("rl", "salun", "scrub")
    shared_lr = spec.setting in ("joint", "alternate") and not per_phase
    optimizer = build_optimizer(
        spec.setting,
        model.parameters(),
        forget={"name": "adamw", "lr": spec.forget_lr, "weight_decay": 0.05},
        retain={
            "name": "sgd",
            "lr": spec.forget_lr if shared_lr else spec.retain_lr,
            "momentum": 0.9,
            "weight_decay": 5e-4,
        },
        plus={"retain_lr": spec.plus_retain_lr} if spec.setting.startswith("dual_plus") else None,
        per_phase_lr=per_phase,
    )
    config = EngineConfig(
        schedule,
        forget_batch=spec.batch_size,
        retain_batch=spec.batch_size,
        joint=spec.setting == "joint",
        seed=seed,
        progress=False,
        **options,
    )
    forget, retain = world.sources
    start = time.perf_counter()
    unlearn(model, method, forget, retain, optimizer, config)
    seconds = time.perf_counter() - start
    return {**evaluate_model(model, world.data, world.split), "seconds": seconds}


@dataclass
class Report:
    rt: list[dict[str, float]]
    runs: dict[str, list[dict[str, float]]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per method and setting (RT first): per-metric mean, std, |gap|; Gap, Std."""
        out = []
        for label, runs in [("RT", self.rt), *self.runs.items()]:
            gap, std, per_metric = gap_and_std(runs, self.rt, METRICS)
            seconds = [r["seconds"] for r in runs]
            rt_seconds = [r["seconds"] for r in self.rt]
            out.append(
                {
                    "method": label,
                    "gap": gap,
                    "std": std,
                    "metrics": per_metric,
                    "seconds": sum(seconds) / len(seconds),
                    "time_vs_rt": sum(seconds) / sum(rt_seconds),
                }
            )
        return out


def run_experiment(
    exp: VisionExperiment, out_dir: Path | None = None, progress: bool = False
) -> Report:
    """Every run of ``exp`` on every seed; the report is written atomically to ``out_dir``."""
    report = Report(rt=[], runs={spec.label: [] for spec in exp.runs})
    data = load_experiment_data(exp)
    for seed in exp.seeds:  # every forget set is checked before anything trains
        forget_split(exp, data, seed)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("unlearning", total=len(exp.seeds) * (1 + len(exp.runs)))
        for seed in exp.seeds:
            bar.update(task, description=f"seed {seed}: original model and RT")
            world = prepare(exp, seed, data)
            report.rt.append({**world.rt_metrics, "seconds": world.rt_seconds})
            bar.advance(task)
            for spec in exp.runs:
                bar.update(task, description=f"seed {seed}: {spec.label}")
                report.runs[spec.label].append(run_unlearning(spec, world, seed))
                bar.advance(task)
    if out_dir is not None:
        write_json(
            out_dir / "report.json",
            {"config": to_dict(exp), "rt": report.rt, "runs": report.runs, "rows": report.rows()},
        )
    return report


@dataclass
class Tuning:
    """Gap (averaged over seeds, SPEC §1.3) of each run at each η_f, and the best η_f."""

    gaps: dict[str, dict[float, float]]

    @property
    def best(self) -> dict[str, float]:
        return {label: min(g, key=g.__getitem__) for label, g in self.gaps.items()}


def tune_forget_lr(
    exp: VisionExperiment,
    grid: Sequence[float],
    out_dir: Path | None = None,
    progress: bool = False,
) -> Tuning:
    """The paper's protocol: η_r fixed, η_f from ``grid``, the lowest mean Gap wins."""
    if not grid or any(not lr > 0 for lr in grid):
        raise ValueError(f"the η_f grid must be non-empty and positive, got {list(grid)}")
    data = load_experiment_data(exp)
    for seed in exp.seeds:
        forget_split(exp, data, seed)
    tuning = Tuning(gaps={spec.label: {} for spec in exp.runs})
    with Progress(disable=not progress) as bar:
        task = bar.add_task("tuning", total=len(exp.seeds) + len(exp.runs) * len(grid))
        worlds = {}
        for seed in exp.seeds:
            worlds[seed] = prepare(exp, seed, data)
            bar.advance(task)
        rt = [w.rt_metrics for w in worlds.values()]
        for spec in exp.runs:
            for lr in grid:
                bar.update(task, description=f"{spec.label}: η_f = {lr:g}")
                tried = replace(spec, forget_lr=lr)
                runs = [run_unlearning(tried, w, seed) for seed, w in worlds.items()]
                tuning.gaps[spec.label][lr] = gap_and_std(runs, rt, METRICS)[0]
                bar.advance(task)
    if out_dir is not None:
        write_json(
            out_dir / "tune.json",
            {
                "config": to_dict(exp),
                "grid": list(grid),
                "gaps": {k: {str(lr): g for lr, g in v.items()} for k, v in tuning.gaps.items()},
                "best": tuning.best,
            },
        )
    return tuning


def report_table(report: Report, title: str) -> Table:
    """The paper's layout: per metric mean ± std (|gap to RT|), then Gap and Std."""
    table = Table(title=title)
    for column in ("method", *METRICS, "Gap ↓", "Std ↓", "time / RT"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report.rows():
        cells = [
            f"{m['mean']:.2f} ± {m['std']:.2f} ({m['gap']:.2f})"
            for m in (row["metrics"][k] for k in METRICS)
        ]
        table.add_row(
            row["method"],
            *cells,
            f"{row['gap']:.2f}",
            f"{row['std']:.2f}",
            f"{row['time_vs_rt']:.2f}",
        )
    return table
