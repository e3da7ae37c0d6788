"""The references every diffusion run shares, made once and cached (SPEC §2.2, §3.2).

Everything that does not depend on the run is keyed by the content of the data it was made
from and everything else that determines it: the original model (trained by the engine,
resumable), the classifier, the original model's samples (its reference metrics, SA's replay
set and Fisher) and the masks; the real images' features are kept in memory. Every run then
samples with the same seed, so two runs' images differ only by their weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dualoptim.io import cached_state, fingerprint
from dualoptim.optim.settings import build_optimizer
from dualoptim.tasks.diffusion import metrics as gm
from dualoptim.tasks.diffusion.config import CHECKPOINT_EVERY, DiffusionExperiment
from dualoptim.tasks.diffusion.data import (
    GenerationData,
    LabelledImages,
    load_generation_data,
    per_class,
    to_model_range,
    to_unit_range,
)
from dualoptim.tasks.diffusion.ddpm import generate
from dualoptim.tasks.diffusion.methods.base import DDPMTraining
from dualoptim.tasks.diffusion.methods.sa import fisher_diagonal
from dualoptim.tasks.diffusion.models import Denoiser, build_denoiser
from dualoptim.tasks.images.models import build_model
from dualoptim.tasks.images.sets import ImageSet
from dualoptim.tasks.images.train import ImageSource, train_classifier
from dualoptim.unlearn import EngineConfig, PhaseOptions, Schedule, unlearn


class World:
    """The data, the cached original denoiser and classifier, and the evaluation."""

    #: Classes forgotten by earlier requests of a continual sequence (a request's view,
    #: tasks/diffusion/requests.py): out of the retain data and the remaining classes.
    forgotten_before: tuple[int, ...] = ()
    #: Whether masks are cached (they are keyed by the original model): not for a request
    #: that starts from another model.
    masks_cached: bool = True

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
    @property
    def train_images(self) -> ImageSet:
        """The training images a run may learn from: all but the classes forgotten before."""
        if not self.forgotten_before:
            return self.data.train
        kept = ~torch.isin(self.data.train.y, torch.tensor(self.forgotten_before))
        return self.data.train.subset(kept.nonzero().flatten())

    def _gone(self, forgotten: int) -> list[int]:
        return [*self.forgotten_before, forgotten]

    def evaluation_labels(self, forgotten: int) -> Tensor:
        e, gone = self.exp.eval, self._gone(forgotten)
        counts = [
            e.forget_images if c in gone else e.images_per_class for c in range(self.data.classes)
        ]
        return torch.arange(self.data.classes).repeat_interleave(torch.tensor(counts))

    def measure(self, images: ImageSet, forgotten: int) -> dict[str, float]:
        """FA (%), FID per extractor on the remaining classes, the same FID between the
        forgotten class's images and its real ones (``<FID>_forgotten``, higher = further),
        and the share (%) of remaining-class images the classifier assigns to their own
        class. FA alone is fooled by a forgotten class collapsed onto one artefact that the
        classifier calls by the class's name; in Inception features ``FID_inception_forgotten``
        shows the collapse, in the classifier's own features it barely does (docs/diffusion.md).
        A continual request's view measures every class forgotten so far: FA and the
        forgotten FIDs are their means, the remaining classes exclude them all."""
        gone, count = self._gone(forgotten), self.exp.eval.forget_images
        drawn = {c: images.x[images.y == c][:count] for c in gone}
        accuracy = [gm.forget_accuracy(self.classifier, drawn[c], c) for c in gone]
        metrics = {"FA": float(np.mean(accuracy))}
        remaining = [c for c in range(self.data.classes) if c not in gone]
        for name, extractor in self.features.items():
            n = self._count(name)[0]
            fake = per_class(images, remaining, n)
            fake_features = gm.extract_features(extractor, fake.x)
            real = torch.cat([self.real_features[name][c] for c in remaining])
            metrics[name] = gm.frechet_distance(real, fake_features)
            distances = [
                gm.frechet_distance(
                    self.real_features[name][c], gm.extract_features(extractor, drawn[c][:n])
                )
                for c in gone
            ]
            metrics[f"{name}_forgotten"] = float(np.mean(distances))
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
    def mask_path(self, *parts: Any) -> Path | None:
        if not self.masks_cached:
            return None
        return self.cache / f"mask-{fingerprint(self.model_key, *parts)}.safetensors"

    def replay(self, forgotten: int, per_class_count: int) -> LabelledImages:
        gone = self._gone(forgotten)
        remaining = [c for c in range(self.data.classes) if c not in gone]
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
