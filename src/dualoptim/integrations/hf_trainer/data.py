"""The data side of :class:`~dualoptim.integrations.hf_trainer.DualOptimTrainer`: paired items.

Every training item pairs a forget example with a retain example, so every micro-batch can
serve any phase and the Trainer's data path (sampler, DDP sharding, ``skip_first_batches`` on
resume, epoch counting) stays untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch.utils.data import Dataset


class ForgetRetainPair(NamedTuple):
    """One training item: a forget example and a retain example (either may be None when its
    set is absent). Not a dict, so the Trainer's column removal leaves it alone."""

    forget: Any
    retain: Any


class PairedBatch(dict):
    """A collated training micro-batch: ``{"forget": batch or None, "retain": batch or None}``.

    Its own type so that the trainer's ``compute_loss`` tells it from an ordinary
    (evaluation) batch; the Trainer and accelerate keep a mapping's type when they move it
    to the device.
    """


class PairedDataset(Dataset):
    """Item ``i`` = ``(forget[i % n_f], retain[i % n_r])``; length = the longer set's.

    The shorter set cycles deterministically; with the Trainer's shuffling sampler every epoch
    sees each example of the longer set once and each of the shorter set about
    ``n_long / n_short`` times. A set may be None (a run that never uses it).
    """

    def __init__(self, forget: Any | None, retain: Any | None) -> None:
        self.forget, self.retain = forget, retain
        sizes = {}
        for name, data in (("forget", forget), ("retain", retain)):
            if data is None:
                continue
            if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
                raise TypeError(
                    f"the {name} dataset must be a map-style dataset (__len__ and "
                    f"__getitem__), got {type(data).__name__}"
                )
            if len(data) == 0:
                raise ValueError(f"the {name} dataset is empty")
            sizes[name] = len(data)
        if not sizes:
            raise ValueError("PairedDataset needs a forget or a retain dataset")
        self.sizes = sizes
        self._length = max(sizes.values())

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> ForgetRetainPair:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} pairs")
        index %= self._length
        f = None if self.forget is None else self.forget[index % self.sizes["forget"]]
        r = None if self.retain is None else self.retain[index % self.sizes["retain"]]
        return ForgetRetainPair(f, r)


class PairCollator:
    """Collates pairs with one collator per side; anything else (evaluation batches) with
    ``fallback``."""

    def __init__(
        self,
        forget: Callable[[list[Any]], Any],
        retain: Callable[[list[Any]], Any],
        fallback: Callable[[list[Any]], Any],
    ) -> None:
        self.forget, self.retain, self.fallback = forget, retain, fallback

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], ForgetRetainPair):
            return self.fallback(features)
        batch = PairedBatch()
        for name, collate in (("forget", self.forget), ("retain", self.retain)):
            items = [getattr(f, name) for f in features]
            batch[name] = None if items[0] is None else collate(items)
        return batch
