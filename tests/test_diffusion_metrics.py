"""Diffusion-unlearning scores (SPEC §3.2): FID against a scipy reference, FA on a hand-built
classifier, feature extractors (the data set's classifier, offline Inception-v3), PNG grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from matplotlib.image import imread
from torch import Tensor, nn

from dualoptim.tasks.diffusion.metrics import (
    ClassifierFeatures,
    InceptionFeatures,
    extract_features,
    forget_accuracy,
    frechet_distance,
    save_sample_grid,
)
from dualoptim.tasks.images.models import build_model, penultimate_features

D = 8


def gaussian(n: int, mean: Tensor, gen: torch.Generator) -> Tensor:
    """n rows of N(mean, A A^T) with a random A (so each call has its own covariance)."""
    a = torch.randn(D, D, generator=gen, dtype=torch.float64)
    return mean + torch.randn(n, D, generator=gen, dtype=torch.float64) @ a.T


def reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    m1, m2 = real.mean(0), fake.mean(0)
    c1, c2 = np.cov(real, rowvar=False, ddof=1), np.cov(fake, rowvar=False, ddof=1)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def test_frechet_distance_matches_scipy_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    real = gaussian(500, torch.zeros(D, dtype=torch.float64), gen)
    fake = gaussian(400, torch.linspace(-1, 1, D, dtype=torch.float64), gen)
    expected = reference_fid(real.numpy(), fake.numpy())
    assert expected > 1  # distinct distributions: a zero would not test much
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_of_itself_and_of_a_shift() -> None:
    gen = torch.Generator().manual_seed(1)
    feats = gaussian(300, torch.zeros(D, dtype=torch.float64), gen)
    shift = torch.arange(D, dtype=torch.float64) / 4
    assert abs(frechet_distance(feats, feats)) < 1e-6
    expected = float(shift.square().sum())
    assert frechet_distance(feats, feats + shift) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_rejects_bad_features() -> None:
    feats = torch.randn(10, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(feats[:1], feats)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(feats, feats[:1])
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(feats, feats[:, :-1])
    broken = feats.clone()
    broken[3, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(feats, broken)


@pytest.fixture
def classifier() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", in_channels=1, classes=10, image_size=8)


def test_classifier_features_equal_penultimate_features(classifier: nn.Module) -> None:
    images = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    extractor = ClassifierFeatures(classifier, (1, 8, 8))
    classifier.train()
    feats = extractor(images)
    assert classifier.training  # the forward pass restores the mode it found
    classifier.eval()
    with torch.no_grad():
        expected = penultimate_features(classifier, images)
    assert feats.shape == (7, extractor.num_features)
    assert extractor.num_features == expected.shape[1]
    torch.testing.assert_close(feats, expected)


def test_extract_features_batches_agree_and_modes_restored(classifier: nn.Module) -> None:
    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    extractor = ClassifierFeatures(classifier, (1, 8, 8))
    extractor.train()
    classifier.body[1].eval()  # a mixed mode: one batch norm frozen, the rest training
    small = extract_features(extractor, images, batch_size=3)
    big = extract_features(extractor, images, batch_size=100)
    assert small.dtype == torch.float64
    assert small.device.type == "cpu"
    assert small.shape == (10, extractor.num_features)
    torch.testing.assert_close(small, big)
    assert extractor.training
    assert classifier.training
    assert not classifier.body[1].training
    assert classifier.body[4].training


class ArgmaxOfPixels(nn.Module):
    """Logits = the 4 pixels of a 2x2 image; records the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        return x.flatten(1)


def test_forget_accuracy_counts_argmax_of_forgotten_class() -> None:
    classes = torch.tensor([2, 0, 2, 2])  # 3 of 4 images argmax to class 2
    images = nn.functional.one_hot(classes, 4).float().view(4, 1, 2, 2)
    model = ArgmaxOfPixels().train()
    assert forget_accuracy(model, images, forgotten=2, batch_size=3) == 75.0
    assert forget_accuracy(model, images, forgotten=0) == 25.0
    assert forget_accuracy(model, images, forgotten=1) == 0.0
    assert model.training
    assert model.seen_training
    assert not any(model.seen_training)
    with pytest.raises(ValueError, match="empty"):
        forget_accuracy(model, images[:0], forgotten=2)
    with pytest.raises(ValueError, match="not among the 4 classes"):
        forget_accuracy(model, images, forgotten=4)


def test_extract_features_rejects_out_of_range_and_empty(classifier: nn.Module) -> None:
    extractor = ClassifierFeatures(classifier, (1, 8, 8))
    images = torch.rand(4, 1, 8, 8)
    signed = torch.zeros(4, 1, 8, 8)
    signed[0, 0, 0, 0] = -1.0  # a [-1, 1] sampler output
    with pytest.raises(ValueError, match=r"in \[-1\.0, 0\.0\]"):
        extract_features(extractor, signed)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extract_features(extractor, images + 0.5)
    with pytest.raises(ValueError, match="empty"):
        extract_features(extractor, images[:0])
    extract_features(extractor, images.clamp(1e-7, 1) - 1e-7)  # within tolerance: accepted


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures()


def test_inception_features_from_offline_weights(inception: InceptionFeatures) -> None:
    gen = torch.Generator().manual_seed(4)
    images = torch.stack([torch.zeros(1, 16, 16), torch.rand(1, 16, 16, generator=gen)])
    feats = extract_features(inception, images)
    assert feats.shape == (2, 2048)
    assert torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-3
    # grayscale is the same image as its RGB repetition
    torch.testing.assert_close(extract_features(inception, images.repeat(1, 3, 1, 1)), feats)


def test_inception_features_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        InceptionFeatures(path="/nonexistent.pt")


@pytest.mark.parametrize("channels", [1, 3])
def test_save_sample_grid_writes_png(tmp_path: Path, channels: int) -> None:
    images = torch.rand(3 * 4, channels, 8, 8, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "grid" / "samples.png"
    save_sample_grid(images, ["airplane", "cat", "dog"], path, title="step 100")
    pixels = imread(path)
    assert pixels.ndim == 3
    assert pixels.shape[0] > 3 * 8
    assert pixels.shape[1] > 4 * 8
    assert [p.name for p in path.parent.iterdir()] == ["samples.png"]  # no temp file left


def test_save_sample_grid_rejects_bad_shapes(tmp_path: Path) -> None:
    images = torch.rand(7, 1, 8, 8)
    with pytest.raises(ValueError, match="multiple"):
        save_sample_grid(images, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels is empty"):
        save_sample_grid(images, [], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
