"""Mean batch gradients over an image source: the saliency of SalUn and the Fisher
diagonal of SFR-on."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dualoptim.tasks.images.train import ImageSource
from dualoptim.unlearn.masks import mean_batch_gradients


def mean_gradients(
    model: nn.Module, source: ImageSource, batch_size: int, square: bool
) -> dict[str, Tensor]:
    """Mean over batches of each parameter's batch gradient of CE (squared if ``square``)."""
    device = next(model.parameters()).device

    def ce(m: nn.Module, index: Tensor) -> Tensor:
        x, y, _ = source.batch(index)
        return F.cross_entropy(m(x.to(device)), y.to(device))

    batches = torch.arange(len(source)).split(batch_size)
    return mean_batch_gradients(model, batches, ce, square)
