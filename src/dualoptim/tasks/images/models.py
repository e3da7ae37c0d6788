"""Image classifiers: the models of classification unlearning (SPEC §2.1) and the judges of
generated images (their accuracy and penultimate features, SPEC §3.2).

Every built-in model computes ``head(features(x))``: ``features`` ends in a flat (B, D) vector
and ``head`` is the one final ``nn.Linear``, so the penultimate features used for FID-like
scores on the data set's own classifier (SPEC §3.2) are well defined. Torchvision models come
in through ``"tv:<name>"`` when torchvision is installed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

TORCHVISION_PREFIX = "tv:"
#: Smallest image side the built-in models accept (8x8 digits); pools that would shrink the
#: feature map below 1x1 are left out, so every size from here up works.
MIN_IMAGE_SIZE = 8


class Classifier(nn.Module):
    """``forward(x) = head(features(x))``; subclasses set ``body`` (ending flat) and ``head``."""

    body: nn.Module
    head: nn.Linear

    def features(self, x: Tensor) -> Tensor:
        """The (B, D) input of the final linear layer."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(Classifier):
    """Three conv-BN-ReLU-max-pool blocks (32/64/128), global average pool, linear head.

    The default: fast on a CPU, and three halvings take 8x8 digits down to 1x1.
    """

    def __init__(self, in_channels: int, classes: int, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [*_conv_bn_relu(c, w), nn.MaxPool2d(2)]
            c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)


class _PadShortcut(nn.Module):
    """He et al.'s option A: subsample by the stride and append zero channels (no parameters)."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _PadShortcut(c_out - c_in, stride)
        else:  # "B": 1x1 projection
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """A CIFAR-form ResNet: 3x3 stem at stride 1, no max-pool, stages of basic blocks (the
    first stage at stride 1, each later one halving the map), global average pool, linear head.

    ``shortcut`` "A" (zero-padding identity, He et al. 2016 §4.2) or "B" (1x1 conv + BN where
    the shape changes).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        widths: tuple[int, ...],
        blocks: int | tuple[int, ...],
        shortcut: str,
    ):
        super().__init__()
        per_stage = (blocks,) * len(widths) if isinstance(blocks, int) else blocks
        layers: list[nn.Module] = _conv_bn_relu(in_channels, widths[0])
        c = widths[0]
        for stage, (w, n) in enumerate(zip(widths, per_stage, strict=True)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(_BasicBlock(c, w, stride, shortcut))
                c = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)


#: VGG-16 configuration D: conv widths, "M" = 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(Classifier):
    """VGG-16 with batch norm in the CIFAR form: conv stack, global average pool, one linear
    layer. Max-pools that would shrink the map below 1x1 at ``image_size`` are dropped, so
    8x8 and 28x28 inputs work too (at 32x32 all five remain, as in the usual CIFAR VGG).
    """

    def __init__(self, in_channels: int, classes: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in _VGG16:
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
            else:
                layers += _conv_bn_relu(c, v)
                c = v
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)


_BUILDERS: dict[str, Callable[[int, int, int], Classifier]] = {
    "cnn": lambda c, k, _s: SmallCNN(c, k),
    "resnet8": lambda c, k, _s: CifarResNet(c, k, (16, 32, 64), 1, "A"),
    "resnet20": lambda c, k, _s: CifarResNet(c, k, (16, 32, 64), 3, "A"),
    "resnet18": lambda c, k, _s: CifarResNet(c, k, (64, 128, 256, 512), 2, "B"),
    "vgg16_bn": lambda c, k, s: VGG16BN(c, k, s),
}

#: Built-in model names; ``"tv:<name>"`` adds any torchvision model.
MODELS: tuple[str, ...] = tuple(_BUILDERS)


def _torchvision_model(name: str, in_channels: int, classes: int) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:
        raise ImportError(
            f"model {TORCHVISION_PREFIX}{name!r} needs torchvision, which is not installed "
            "(it works here only as the pair torch==2.14.1 + torchvision==0.29.1); "
            f"or use a built-in model: {', '.join(MODELS)}"
        ) from e
    if in_channels != 3:
        raise ValueError(
            f"torchvision models take 3 input channels, got in_channels={in_channels}; "
            "repeat grayscale channels or use a built-in model"
        )
    return torchvision.models.get_model(name, num_classes=classes)


def build_model(name: str, *, in_channels: int, classes: int, image_size: int) -> nn.Module:
    """A fresh, randomly initialised classifier ``name`` for square ``image_size`` inputs.

    ``name`` is one of ``MODELS`` or ``"tv:<torchvision model name>"``.
    """
    if in_channels < 1 or classes < 1:
        raise ValueError(f"need in_channels >= 1 and classes >= 1, got {in_channels}, {classes}")
    if name.startswith(TORCHVISION_PREFIX) and len(name) > len(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX) :], in_channels, classes)
    if name not in _BUILDERS:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)} "
            f"or {TORCHVISION_PREFIX}<torchvision model name>"
        )
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    return _BUILDERS[name](in_channels, classes, image_size)


def penultimate_features(model: nn.Module, x: Tensor) -> Tensor:
    """The input of ``model``'s final linear layer for ``x``: shape (B, D).

    Found with a pre-hook on every ``nn.Linear`` (the last one called wins) rather than a
    ``features`` attribute, because torchvision gives that name different meanings (VGG: the
    conv stack; Swin: the unpooled map). For the built-in models it equals
    ``model.features(x)``. Runs in the model's current train/eval and grad mode.
    """
    last: list[Tensor] = []

    def keep(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        last[:] = [args[0]]

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    handles = [m.register_forward_pre_hook(keep) for m in linears]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not last:
        raise ValueError(f"{type(model).__name__} calls no nn.Linear layer in forward")
    return last[0]
