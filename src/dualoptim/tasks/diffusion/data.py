"""Images for class-conditional generation: the classification loaders, resized once.

The diffusion model sees images in [-1, 1] (the DDPM convention); the classifier that
measures FA and the FID features see them in [0, 1], like every vision model of the project.
Sets are resized once, on load, with antialiased bilinear interpolation, so 28×28
Fashion-MNIST becomes the 16×16 a CPU can train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from dualoptim.io import fingerprint
from dualoptim.tasks.images.loaders import load_data
from dualoptim.tasks.images.sets import ImageData, ImageSet

#: Class names of the data sets with named classes (others are called by their index).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "T-shirt",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Boot",
    ),
    "cifar10": (
        "Airplane",
        "Automobile",
        "Bird",
        "Cat",
        "Deer",
        "Dog",
        "Frog",
        "Horse",
        "Ship",
        "Truck",
    ),
}


@dataclass(frozen=True)
class GenerationData:
    """Training and test images in [0, 1] at the model's resolution, with class names."""

    name: str
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return self.train.classes

    @property
    def fingerprint(self) -> str:
        """The images and labels actually used (after subsampling and resizing), as records
        carry them."""
        return fingerprint(self.train.fingerprint, self.test.fingerprint)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def check_class(self, forgotten: int) -> None:
        if not 0 <= forgotten < self.classes:
            raise ValueError(
                f"forget class {forgotten} is not a class of {self.name} (0..{self.classes - 1})"
            )
        if not bool((self.train.y == forgotten).any()):
            raise ValueError(f"{self.name} has no training image of class {forgotten}")
        if bool((self.train.y == forgotten).all()):
            raise ValueError(f"{self.name} has only class {forgotten}: nothing would remain")


def to_model_range(images: Tensor) -> Tensor:
    """[0, 1] → [-1, 1], the range the denoiser is trained on."""
    return images * 2 - 1


def to_unit_range(images: Tensor) -> Tensor:
    """[-1, 1] → [0, 1], clamped: what classifiers, FID features and PNGs take."""
    return ((images + 1) / 2).clamp(0, 1)


def resize(images: ImageSet, size: int) -> ImageSet:
    """Square ``size``×``size`` images (antialiased bilinear), values kept in [0, 1]."""
    if images.x.shape[-1] == size and images.x.shape[-2] == size:
        return images
    x = F.interpolate(images.x, size=(size, size), mode="bilinear", antialias=True)
    return ImageSet(x.clamp(0, 1), images.y, images.classes)


def load_generation_data(
    name: str,
    root: str | None = None,
    *,
    image_size: int | None = None,
    per_class_train: int | None = None,
    per_class_test: int | None = None,
    seed: int = 0,
) -> GenerationData:
    """A data set of ``dualoptim.tasks.images.loaders`` at ``image_size`` (None: as stored)."""
    if image_size is not None and image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    data: ImageData = load_data(
        name,
        root,
        per_class_train=per_class_train,
        per_class_test=per_class_test,
        subsample_seed=seed,
    )
    train, test = data.train, data.test
    if image_size is not None:
        train, test = resize(train, image_size), resize(test, image_size)
    names = CLASS_NAMES.get(name, tuple(str(c) for c in range(train.classes)))
    return GenerationData(name, train, test, names)


@dataclass(frozen=True)
class LabelledImages:
    """A Source of (images in [-1, 1], labels, index) batches."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[index], self.y[index], index


def class_split(images: ImageSet, forgotten: int) -> tuple[LabelledImages, LabelledImages]:
    """D_f (every image of the forgotten class) and D_r (the rest), in the model's range."""
    forget = images.y == forgotten
    x = to_model_range(images.x)
    y = images.y
    return LabelledImages(x[forget], y[forget]), LabelledImages(x[~forget], y[~forget])


@dataclass(frozen=True)
class NoiseImages:
    """Selective Amnesia's forget data: fresh uniform noise in [-1, 1] labelled as the
    forgotten class. Drawn from the global RNG, which the engine checkpoints, so a resumed
    run draws the same noise."""

    size: int
    label: int
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return self.size

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = torch.rand(len(index), *self.shape) * 2 - 1
        return x, torch.full((len(index),), self.label, dtype=torch.long), index


def per_class(images: ImageSet, classes: Sequence[int], count: int) -> ImageSet:
    """The first ``count`` images of each class in ``classes`` (fewer if a class has fewer)."""
    picks = [(images.y == c).nonzero().flatten()[:count] for c in classes]
    return images.subset(torch.cat(picks))
