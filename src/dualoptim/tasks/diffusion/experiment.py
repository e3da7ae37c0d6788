"""Class unlearning in conditional diffusion end to end: train the original denoiser and the
data set's classifier, unlearn one class, generate, measure FA and FID (SPEC §2.2, §3.2).

Everything that does not depend on the run is made once and cached, keyed by the content of
the data it was made from and everything else that determines it: the original model
(trained by the engine, resumable), the classifier, the original model's samples (its
reference metrics, SA's replay set and Fisher) and the masks; the real images' features are
kept in memory. Every run then samples with the same seed, so two runs' images differ only
by their weights.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from dualoptim.config import require_runs_and_seeds
from dualoptim.io import cached_state, fingerprint
from dualoptim.optim.objective import ObjectiveOptimizer
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.diffusion import metrics as gm
from dualoptim.tasks.diffusion.data import (
    GenerationData,
    LabelledImages,
    NoiseImages,
    class_split,
    load_generation_data,
    per_class,
    to_model_range,
    to_unit_range,
)
from dualoptim.tasks.diffusion.ddpm import NoiseSchedule, SamplingSpec, generate
from dualoptim.tasks.diffusion.methods import (
    DDPMTraining,
    SalUn,
    SelectiveAmnesia,
    SFRon,
    fisher_diagonal,
)
from dualoptim.tasks.diffusion.models import Denoiser, DenoiserSpec, build_denoiser
from dualoptim.tasks.vision.data import ImageSet
from dualoptim.tasks.vision.methods import ImageSource
from dualoptim.tasks.vision.models import build_model
from dualoptim.tasks.vision.train import TrainRecipe, train_classifier
from dualoptim.unlearn import EngineConfig, PhaseOptions, Schedule, unlearn

CHECKPOINT_EVERY = 200  # steps between checkpoints of original training and of unlearning runs

MethodName = Literal["sa", "salun", "sfron"]
SettingName = Literal["joint", "alternate", "dual", "dual_8bit", "dual_plus", "dual_plus_8bit"]
METHOD_LABELS = {"sa": "SA", "salun": "SalUn", "sfron": "SFR-on"}
#: As published: SA and SalUn sum their two losses (Joint); SFR-on alternates on one Adam.
PUBLISHED_SETTING = {"sa": "joint", "salun": "joint", "sfron": "alternate"}
#: Paper-size step size and iterations of each method as published (SPEC §2.2).
PAPER_LR = {"sa": 1e-4, "salun": 1e-5, "sfron": 1e-4}
PAPER_ITERATIONS = {"sa": 20_000, "salun": 1000, "sfron": 150}
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

    method: MethodName = "sfron"
    setting: SettingName | None = None  # None: as published (SA/SalUn Joint, SFR-on Alternate)
    iterations: int | None = None
    forget_lr: float | None = None
    retain_lr: float | None = None  # Optim_r's (dual settings); None: η_f
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

    def __post_init__(self) -> None:
        if self.method not in METHOD_LABELS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(METHOD_LABELS)}")
        if self.setting is not None and self.setting not in get_args(SettingName):
            raise ValueError(f"unknown setting {self.setting!r}")
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

    @property
    def resolved_setting(self) -> str:
        return self.setting or PUBLISHED_SETTING[self.method]

    @property
    def label(self) -> str:
        """E.g. "SA", "SFR-on+DO", "SFR-on (joint)"; SFR-on's α when it is not the default."""
        setting, name = self.resolved_setting, METHOD_LABELS[self.method]
        if setting in SETTING_SUFFIX:
            label = name + SETTING_SUFFIX[setting]
        else:
            label = name if setting == PUBLISHED_SETTING[self.method] else f"{name} ({setting})"
        default_alpha = 1.0 if self.dual else 10.0
        if self.method == "sfron" and self.sfron_alpha != default_alpha:
            label += f" α={self.sfron_alpha:g}"
        return label

    @property
    def eta_f(self) -> float:
        return self.forget_lr if self.forget_lr is not None else PAPER_LR[self.method]

    @property
    def eta_r(self) -> float:
        return self.retain_lr if self.retain_lr is not None else self.eta_f

    @property
    def steps(self) -> int:
        return self.iterations or PAPER_ITERATIONS[self.method]

    @property
    def dual(self) -> bool:
        return self.resolved_setting.startswith("dual")

    @property
    def c_r(self) -> float:
        if self.retain_weight is not None:
            return self.retain_weight
        return 1e-3 if self.method == "salun" and self.resolved_setting == "joint" else 1.0

    @property
    def sfron_alpha(self) -> float:
        return self.alpha if self.alpha is not None else (1.0 if self.dual else 10.0)


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

    def __post_init__(self) -> None:
        require_runs_and_seeds(self.runs, self.seeds)


class World:
    """The data, the cached original denoiser and classifier, and the evaluation."""

    def __init__(self, exp: DiffusionExperiment, progress: bool = True) -> None:
        self.exp = exp
        self.progress = progress
        self.cache = Path(exp.cache_dir)
        d = exp.data
        self.data: GenerationData = load_generation_data(
            d.name,
            d.root,
            image_size=d.image_size,
            per_class_train=d.per_class_train,
            per_class_test=d.per_class_test,
        )
        for c in d.forget_classes:
            self.data.check_class(c)
        self.scheduler = exp.noise.ddpm()

    # ------------------------------------------------------------------ keys
    @property
    def fingerprint(self) -> str:
        """The data actually used (training and test images), as records carry it."""
        return self.data.fingerprint

    @property
    def model_key(self) -> str:
        """The original denoiser's inputs: the training images' content (not their path),
        architecture, noise schedule and recipe."""
        e = self.exp
        return fingerprint(self.data.train.fingerprint, e.model, e.noise, e.train)

    @property
    def key(self) -> str:
        """Everything that determines the references and the evaluation."""
        e = self.exp
        return fingerprint(self.model_key, self.fingerprint, e.data, e.classifier, e.eval)

    # ------------------------------------------------------------------ models
    def new_denoiser(self, state: Mapping[str, Tensor] | None = None) -> Denoiser:
        torch.manual_seed(self.exp.train.seed)
        model = build_denoiser(self.exp.model, self.data.image_shape, self.data.classes)
        if state is not None:
            model.load_state_dict(state)
        return model

    def _train_original(self) -> dict[str, Tensor]:
        recipe = self.exp.train
        model = self.new_denoiser()
        source = LabelledImages(to_model_range(self.data.train.x), self.data.train.y)
        optimizer = build_optimizer(
            "alternate",
            model.parameters(),
            forget={"name": "adam", "lr": recipe.lr},
            retain={"name": "adam", "lr": recipe.lr},
        )
        checkpoints = self.cache / f"training-{self.model_key}"
        cfg = EngineConfig(
            Schedule(recipe.iterations, forget_steps=0, retain_steps=1),
            retain_batch=recipe.batch_size,
            retain=PhaseOptions(clip_norm=recipe.clip_norm),
            lr_schedule=recipe.lr_schedule,
            seed=recipe.seed,
            checkpoint_dir=checkpoints,
            checkpoint_every=CHECKPOINT_EVERY,
            progress=self.progress,
        )
        method = DDPMTraining(self.scheduler, label_dropout=recipe.label_dropout)
        unlearn(model, method, None, source, optimizer, cfg)
        return model.state_dict()

    @cached_property
    def original(self) -> tuple[dict[str, Tensor], float]:
        """The original denoiser's weights and training seconds (cached)."""
        path = self.cache / f"denoiser-{self.model_key}.safetensors"
        return cached_state(path, self._train_original)

    def _train_classifier(self) -> dict[str, Tensor]:
        spec = self.exp.classifier
        model = self._new_classifier()
        source = ImageSource(self.data.train.x, self.data.train.y)
        train_classifier(model, source, spec.train, seed=spec.seed, progress=self.progress)
        return model.state_dict()

    def _new_classifier(self) -> nn.Module:
        torch.manual_seed(self.exp.classifier.seed)
        c, size, _ = self.data.image_shape
        return build_model(
            self.exp.classifier.model, in_channels=c, classes=self.data.classes, image_size=size
        )

    @cached_property
    def classifier(self) -> nn.Module:
        key = fingerprint(self.data.train.fingerprint, self.exp.classifier)
        state, _ = cached_state(
            self.cache / f"classifier-{key}.safetensors", self._train_classifier
        )
        model = self._new_classifier()
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    @cached_property
    def classifier_accuracy(self) -> float:
        """The classifier's test accuracy (%): how far FA can be trusted."""
        test, classifier = self.data.test, self.classifier  # trained outside no_grad
        with torch.no_grad():
            predicted = torch.cat([classifier(x).argmax(1) for x in test.x.split(512)])
        return float((predicted == test.y).float().mean() * 100)

    # ------------------------------------------------------------------ samples
    def generate(self, model: Denoiser, labels: Tensor) -> ImageSet:
        """Images in [0, 1] for ``labels``, always from the evaluation seed."""
        e = self.exp
        images = generate(model, labels, e.noise, e.eval.sampling, e.eval.seed, self.progress)
        return ImageSet(to_unit_range(images), labels, self.data.classes)

    @property
    def per_class_original(self) -> int:
        e = self.exp.eval
        counts = [e.forget_images, e.images_per_class, e.inception_per_class if e.inception else 0]
        counts += [max((r.replay_per_class, r.fisher_per_class)) for r in self.exp.runs]
        return max(counts)

    @cached_property
    def original_samples(self) -> ImageSet:
        """The original model's samples of every class (its references, SA's replay and
        Fisher data), made once."""
        n = self.per_class_original
        key = fingerprint(self.model_key, self.exp.noise, self.exp.eval.sampling, n)
        path = self.cache / f"samples-{key}.safetensors"
        labels = torch.arange(self.data.classes).repeat_interleave(n)

        def build() -> dict[str, Tensor]:
            images = self.generate(self.new_denoiser(self.original[0]), labels)
            return {"x": images.x}

        state, _ = cached_state(path, build)
        return ImageSet(state["x"], labels, self.data.classes)

    # ------------------------------------------------------------------ FID features
    @cached_property
    def features(self) -> dict[str, nn.Module]:
        """Feature extractors by name: the classifier's always, Inception-v3's on request."""
        out: dict[str, nn.Module] = {
            "FID": gm.ClassifierFeatures(self.classifier, self.data.image_shape)
        }
        if self.exp.eval.inception:
            out["FID_inception"] = gm.InceptionFeatures()
        return out

    def _count(self, name: str) -> tuple[int, int]:
        """(generated, real) images per class that FID ``name`` uses."""
        e = self.exp.eval
        if name == "FID_inception":
            return e.inception_per_class, e.inception_per_class
        return e.images_per_class, e.real_per_class

    @cached_property
    def real_features(self) -> dict[str, dict[int, Tensor]]:
        """Features of real test images, per extractor and class (cached in memory)."""
        out: dict[str, dict[int, Tensor]] = {}
        for name, extractor in self.features.items():
            real = per_class(self.data.test, range(self.data.classes), self._count(name)[1])
            feats = gm.extract_features(extractor, real.x, progress=self.progress, desc=name)
            out[name] = {c: feats[real.y == c] for c in range(self.data.classes)}
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluation_labels(self, forgotten: int) -> Tensor:
        e = self.exp.eval
        counts = [
            e.forget_images if c == forgotten else e.images_per_class
            for c in range(self.data.classes)
        ]
        return torch.arange(self.data.classes).repeat_interleave(torch.tensor(counts))

    def measure(self, images: ImageSet, forgotten: int) -> dict[str, float]:
        """FA (%), FID per extractor on the remaining classes, the same FID between the
        forgotten class's images and its real ones (``<FID>_forgotten``, higher = further),
        and the share (%) of remaining-class images the classifier assigns to their own
        class. FA alone is fooled by a forgotten class collapsed onto one artefact that the
        classifier calls by the class's name; in Inception features ``FID_inception_forgotten``
        shows the collapse, in the classifier's own features it barely does (docs/diffusion.md)."""
        forget_images = images.x[images.y == forgotten][: self.exp.eval.forget_images]
        metrics = {"FA": gm.forget_accuracy(self.classifier, forget_images, forgotten)}
        remaining = [c for c in range(self.data.classes) if c != forgotten]
        for name, extractor in self.features.items():
            n = self._count(name)[0]
            fake = per_class(images, remaining, n)
            fake_features = gm.extract_features(extractor, fake.x)
            real = torch.cat([self.real_features[name][c] for c in remaining])
            metrics[name] = gm.frechet_distance(real, fake_features)
            forgotten_features = gm.extract_features(extractor, forget_images[:n])
            metrics[f"{name}_forgotten"] = gm.frechet_distance(
                self.real_features[name][forgotten], forgotten_features
            )
        kept = per_class(images, remaining, self.exp.eval.images_per_class)
        classifier = self.classifier
        with torch.no_grad():
            predicted = classifier(kept.x).argmax(1)
        metrics["remaining_accuracy"] = float((predicted == kept.y).float().mean() * 100)
        return metrics

    def grid(self, images: ImageSet, path: Path, title: str) -> None:
        k = self.exp.eval.grid_per_class
        rows = [images.x[images.y == c][:k] for c in range(self.data.classes)]
        gm.save_sample_grid(torch.cat(rows), self.data.class_names, path, title)

    def reference(self, forgotten: int) -> dict[str, float]:
        """The original model's metrics for one forgotten class (nothing unlearned)."""
        return self.measure(self.original_samples, forgotten)

    # ------------------------------------------------------------------ method inputs
    def mask_path(self, *parts: Any) -> Path:
        return self.cache / f"mask-{fingerprint(self.model_key, *parts)}.safetensors"

    def replay(self, forgotten: int, per_class_count: int) -> LabelledImages:
        remaining = [c for c in range(self.data.classes) if c != forgotten]
        images = per_class(self.original_samples, remaining, per_class_count)
        return LabelledImages(to_model_range(images.x), images.y)

    def fisher(self, per_class_count: int, batch_size: int) -> dict[str, Tensor]:
        """SA's diagonal Fisher on the original model's samples of every class (cached)."""
        key = fingerprint(self.model_key, self.exp.eval.sampling, per_class_count, batch_size)

        def build() -> dict[str, Tensor]:
            images = per_class(self.original_samples, range(self.data.classes), per_class_count)
            torch.manual_seed(self.exp.train.seed)
            samples = LabelledImages(to_model_range(images.x), images.y)
            model = self.new_denoiser(self.original[0])
            return fisher_diagonal(model, self.scheduler, samples, batch_size)

        return cached_state(self.cache / f"fisher-{key}.safetensors", build)[0]


def build_method(spec: GenUnlearnSpec, world: World, forgotten: int):
    """(method, forget source, retain source) of ``spec`` for one forgotten class."""
    forget, retain = class_split(world.data.train, forgotten)
    common = {"label_dropout": spec.label_dropout}
    if spec.method == "sa":
        noise = NoiseImages(len(forget), forgotten, world.data.image_shape)
        fisher = world.fisher(spec.fisher_per_class, spec.batch_size)
        method = SelectiveAmnesia(
            world.scheduler, fisher=fisher, gamma=spec.gamma, lam=spec.lam, **common
        )
        return method, noise, world.replay(forgotten, spec.replay_per_class)
    mask_options = {"batch_size": spec.batch_size, "mask_batches": spec.mask_batches, "seed": 0}
    if spec.method == "salun":
        method = SalUn(
            world.scheduler,
            forget=forget,
            keep=spec.keep,
            mask_cache=world.mask_path("salun", forgotten, spec.keep, mask_options),
            **mask_options,
            **common,
        )
        return method, forget, retain
    method = SFRon(
        world.scheduler,
        forget=forget,
        retain=retain,
        alpha=spec.sfron_alpha,
        loss=spec.sfron_loss,
        mask_cache=world.mask_path("sfron", forgotten, mask_options),
        **mask_options,
        **common,
    )
    return method, forget, retain


def make_optimizer(spec: GenUnlearnSpec, model: nn.Module) -> ObjectiveOptimizer:
    """Adam on both sides (the U-Net's pretraining optimizer; DiT's AdamW with wd 0 is the
    same update). The shared settings run one Adam at η_f."""
    setting = spec.resolved_setting
    plus = {"retain_lr": spec.eta_r} if setting.startswith("dual_plus") else None
    return build_optimizer(
        setting,
        model.parameters(),
        forget={"name": "adam", "lr": spec.eta_f},
        retain={"name": "adam", "lr": spec.eta_r if spec.dual else spec.eta_f},
        plus=plus,
    )


def engine_config(
    spec: GenUnlearnSpec, seed: int, progress: bool, checkpoint_dir: Path | None = None
) -> EngineConfig:
    return EngineConfig(
        Schedule(spec.steps, 1, 1),
        forget_batch=spec.batch_size,
        retain_batch=spec.batch_size,
        joint=spec.resolved_setting == "joint",
        forget=PhaseOptions(weight=spec.forget_weight, clip_norm=spec.forget_clip),
        retain=PhaseOptions(weight=spec.c_r, clip_norm=spec.retain_clip),
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY if checkpoint_dir is not None else 0,
        progress=progress,
    )


def run_unlearning(
    spec: GenUnlearnSpec,
    world: World,
    forgotten: int,
    seed: int,
    grid: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Unlearn class ``forgotten`` under ``spec``; metrics, seconds, steps, curves, and the
    step it resumed from.

    With ``checkpoint_dir`` the run checkpoints every ``CHECKPOINT_EVERY`` steps and a killed
    run resumes there (SA's published 20k iterations are hours); the folder is removed once
    the run has finished and been measured."""
    model = world.new_denoiser(world.original[0])
    method, forget, retain = build_method(spec, world, forgotten)
    torch.manual_seed(seed)
    result = unlearn(
        model,
        method,
        forget,
        retain,
        make_optimizer(spec, model),
        engine_config(spec, seed, world.progress, checkpoint_dir),
        resume=checkpoint_dir is not None,
    )
    images = world.generate(model, world.evaluation_labels(forgotten))
    if grid is not None:
        name = world.data.class_names[forgotten]
        world.grid(images, grid, f"{spec.label}, forgetting {name}")
    measured = {
        "metrics": world.measure(images, forgotten),
        "seconds": result.seconds,
        "steps": result.steps,
        "curves": result.curves,
        "resumed_from_step": result.resumed_from_step,
    }
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return measured
