"""Image classifiers: every built-in builds for digits-, MNIST- and CIFAR-sized inputs, has the
published size, and exposes its penultimate features; bad names fail clearly."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from dualoptim.tasks.images.models import MODELS, build_model, penultimate_features

SHAPES = [(1, 8), (1, 28), (3, 32)]  # (in_channels, image_size): digits, MNIST, CIFAR
WIDTH = {"cnn": 128, "resnet8": 64, "resnet20": 64, "resnet18": 512, "vgg16_bn": 512}

#: Parameters at 3 channels, 10 classes (measured): ResNet-20 0.27M as in He et al. Table 6;
#: ResNet-18 11.17M; VGG-16-BN 14.72M (14.73M with the usual redundant conv biases before BN).
PARAMS = {
    "cnn": (90_000, 100_000),
    "resnet8": (75_000, 76_000),
    "resnet20": (265_000, 275_000),
    "resnet18": (11_100_000, 11_250_000),
    "vgg16_bn": (14_650_000, 14_750_000),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 2 gain nothing from intra-op threads, and when other processes share the
    cores, OpenMP's waiting threads made this file ~6x slower (38 s instead of 6 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_models_listed():
    assert set(MODELS) == set(WIDTH)


@pytest.mark.parametrize(("in_channels", "size"), SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_output_and_penultimate_shapes(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, classes=10, image_size=size).eval()
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = penultimate_features(model, x)
    assert logits.shape == (2, 10)
    assert feats.shape == (2, WIDTH[name])
    torch.testing.assert_close(feats, model.features(x))
    torch.testing.assert_close(model.head(feats), logits)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(name):
    model = build_model(name, in_channels=3, classes=10, image_size=32)
    lo, hi = PARAMS[name]
    assert lo <= sum(p.numel() for p in model.parameters()) <= hi


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = build_model(name, in_channels=1, classes=3, image_size=8).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_option_a_shortcuts_have_no_parameters():
    # ResNet-20 with option A: 19 convs, 19 BNs and the head, nothing in the shortcuts.
    model = build_model("resnet20", in_channels=3, classes=10, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert all(m.kernel_size == (3, 3) for m in convs)


def test_resnet18_is_the_cifar_form():
    model = build_model("resnet18", in_channels=3, classes=10, image_size=32)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_vgg_keeps_all_five_pools_at_32_and_drops_the_impossible_ones_at_8():
    def pools(size: int) -> int:
        model = build_model("vgg16_bn", in_channels=3, classes=10, image_size=size)
        return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())

    assert pools(32) == 5
    assert pools(8) == 3  # 8 -> 4 -> 2 -> 1


def test_penultimate_of_any_model_is_the_input_of_its_last_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(5, 2, 2)
    feats = penultimate_features(model, x)
    torch.testing.assert_close(feats, model[2](model[1](model[0](x))))
    assert not model[3]._forward_pre_hooks  # hooks removed


def test_penultimate_needs_a_linear_layer():
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        penultimate_features(nn.Flatten(), torch.randn(2, 3))


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as err:
        build_model("resnet50", in_channels=3, classes=10, image_size=32)
    assert all(name in str(err.value) for name in MODELS)
    assert "tv:" in str(err.value)


def test_empty_torchvision_name_is_unknown():
    with pytest.raises(ValueError, match="unknown model 'tv:'"):
        build_model("tv:", in_channels=3, classes=10, image_size=32)


def test_torchvision_model_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match="needs torchvision"):
        build_model("tv:resnet18", in_channels=3, classes=10, image_size=32)


@pytest.mark.parametrize(("in_channels", "classes", "size"), [(0, 10, 32), (3, 0, 32), (3, 10, 7)])
def test_bad_sizes(in_channels, classes, size):
    with pytest.raises(ValueError, match=">="):
        build_model("cnn", in_channels=in_channels, classes=classes, image_size=size)
