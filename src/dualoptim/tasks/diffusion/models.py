"""Class-conditional denoisers built by diffusers: a U-Net (DDPM) and a DiT.

Both are wrapped in :class:`Denoiser`, whose ``forward(x_t, t, labels)`` returns the predicted
noise, and whose label ``classes`` (== ``null_label``) is the empty condition of
classifier-free guidance. Label dropout is done by the training loss, not by the model:
diffusers' DiT drops labels by itself in train mode, which would also drop the labels of
unlearning losses, so that is switched off here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffusers import DiTTransformer2DModel, UNet2DModel
from diffusers.models.embeddings import LabelEmbedding
from torch import Tensor, nn


@dataclass(frozen=True)
class DenoiserSpec:
    """The architecture. U-Net: ``channels`` per resolution level (each level but the last
    halves the resolution), ``attention`` marks the levels with self-attention. DiT: patches
    of ``patch_size``, ``layers`` transformer blocks of ``heads`` × ``head_dim``."""

    kind: Literal["unet", "dit"] = "unet"
    channels: tuple[int, ...] = (32, 64, 64)
    attention: tuple[bool, ...] | None = None  # None: none
    layers_per_block: int = 1
    norm_groups: int = 8
    layers: int = 4
    heads: int = 4
    head_dim: int = 16
    patch_size: int = 2

    def __post_init__(self) -> None:
        if self.kind == "unet":
            if not self.channels or any(c < 1 for c in self.channels):
                raise ValueError(f"model.channels must be positive, got {self.channels}")
            if any(c % self.norm_groups for c in self.channels):
                raise ValueError(
                    f"model.channels {self.channels} must be multiples of norm_groups "
                    f"{self.norm_groups} (group norm)"
                )
            if self.attention is not None and len(self.attention) != len(self.channels):
                raise ValueError("model.attention needs one flag per entry of model.channels")
        for name in ("layers_per_block", "layers", "heads", "head_dim", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")

    def check_image_size(self, size: int) -> None:
        if self.kind == "unet":
            factor = 2 ** (len(self.channels) - 1)
            if size % factor:
                raise ValueError(
                    f"a U-Net with {len(self.channels)} levels needs an image size divisible "
                    f"by {factor}, got {size}"
                )
        elif size % self.patch_size:
            raise ValueError(f"image size {size} is not a multiple of patch_size {self.patch_size}")


class Denoiser(nn.Module):
    """ε_θ(x_t, t, c) for labels in [0, classes]; label ``classes`` is the empty condition."""

    def __init__(self, net: nn.Module, classes: int) -> None:
        super().__init__()
        self.net = net
        self.classes = classes

    @property
    def null_label(self) -> int:
        return self.classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        if isinstance(self.net, DiTTransformer2DModel):
            return self.net(x, timestep=t, class_labels=labels).sample
        return self.net(x, t, class_labels=labels).sample


def build_denoiser(spec: DenoiserSpec, image_shape: tuple[int, int, int], classes: int) -> Denoiser:
    """A freshly initialised denoiser for (C, H, W) images and ``classes`` classes."""
    channels, height, width = image_shape
    if height != width:
        raise ValueError(f"square images only, got {height}×{width}")
    spec.check_image_size(height)
    if spec.kind == "dit":
        net: nn.Module = DiTTransformer2DModel(
            num_attention_heads=spec.heads,
            attention_head_dim=spec.head_dim,
            in_channels=channels,
            out_channels=channels,
            num_layers=spec.layers,
            sample_size=height,
            patch_size=spec.patch_size,
            num_embeds_ada_norm=classes,
        )
        for module in net.modules():  # keep the null-label row; drop labels in the loss only
            if isinstance(module, LabelEmbedding):
                module.dropout_prob = 0.0
    else:
        attention = spec.attention or (False,) * len(spec.channels)
        net = UNet2DModel(
            sample_size=height,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=spec.channels,
            layers_per_block=spec.layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in attention[::-1]),
            num_class_embeds=classes + 1,
            norm_num_groups=spec.norm_groups,
        )
    return Denoiser(net, classes)
