"""FSDP2 for the engine: shard the model with torch's ``fully_shard`` as accelerate's FSDP
plugin describes it, and save and load sharded checkpoints with torch's distributed checkpoint.

The engine shards the model itself, on every device, instead of handing it to
``accelerator.prepare``: accelerate 1.15 drops an FSDP plugin on CPU without a word (the run
becomes DDP), so on a CPU machine only this path shards at all, and one path is one behaviour
to test. The plugin's options come from accelerate (its object on a GPU, the environment
``accelerate launch`` sets elsewhere); those this path does not implement are refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.other import get_module_children_bottom_up
from torch import Tensor, nn

from dualoptim.distributed import fsdp_in_environment
from dualoptim.optim import OBJECTIVES, ObjectiveOptimizer
from dualoptim.optim.inner import is_dtensor


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP2 shards (DTensors)."""
    return any(is_dtensor(p) for p in model.parameters())


def fsdp_requested(accelerator: Accelerator) -> bool:
    """Whether the run was asked to shard: accelerate's FSDP plugin is active (GPU), or
    ``accelerate launch`` with an FSDP config set the environment (accelerate drops the plugin
    on CPU but leaves the environment)."""
    return accelerator.distributed_type == DistributedType.FSDP or fsdp_in_environment()


def fsdp_plugin(accelerator: Accelerator) -> FullyShardedDataParallelPlugin:
    """The FSDP options of this run, refusing those the engine's sharding does not honour."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    plugin = getattr(accelerator.state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"fsdp_version {plugin.fsdp_version}: the engine shards with FSDP2 (torch's "
            "fully_shard) only; set fsdp_version: 2 in the accelerate config"
        )
    unsupported = {
        "fsdp_offload_params": isinstance(plugin.cpu_offload, CPUOffloadPolicy),
        "fsdp_activation_checkpointing": bool(plugin.activation_checkpointing),
        "fsdp_cpu_ram_efficient_loading": bool(plugin.cpu_ram_efficient_loading),
        "fsdp_ignored_modules": plugin.ignored_modules is not None,
    }
    named = sorted(k for k, on in unsupported.items() if on)
    if named:
        raise ValueError(
            f"the engine's FSDP2 does not implement {', '.join(named)}: remove "
            f"{'them' if len(named) > 1 else 'it'} from the accelerate config"
        )
    return plugin


def shard(
    model: nn.Module, optimizer: ObjectiveOptimizer, plugin: FullyShardedDataParallelPlugin
) -> None:
    """Shard ``model`` in place with ``fully_shard`` (the plugin's wrap policy, bottom up, then
    the root) and give ``optimizer`` the sharded parameters, masks cut into their shards.

    The optimizer must not have stepped: its states would be of the unsharded parameters.
    Parameters are matched by name, so tied weights stay one parameter.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    masks = {o: optimizer.masks(o) for o in OBJECTIVES}
    if any(not k.endswith("_mask") for s in optimizer.state.values() for k in s):
        raise ValueError(
            "the optimizer has stepped before the engine sharded the model (FSDP2): build a "
            "fresh optimizer for the run"
        )
    before = {id(p): name for name, p in model.named_parameters()}
    if any(id(p) not in before for g in optimizer.param_groups for p in g["params"]):
        raise ValueError(
            "the optimizer holds a tensor that is not a parameter of the model: under FSDP2 "
            "the engine can only shard the model's own parameters"
        )
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    options = {"reshard_after_forward": plugin.reshard_after_forward}
    if policy is not None:
        for module in get_module_children_bottom_up(model)[:-1]:
            if policy(module) and not isinstance(module, FSDPModule):
                fully_shard(module, **options)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base is not model:  # a peft model: its generate() calls the base model's forward
        fully_shard(base, **options)
    fully_shard(model, **options)
    after = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [after[before[id(p)]] for p in group["params"]]
    optimizer.state.clear()
    for objective, by_param in masks.items():
        if by_param:
            optimizer.set_mask(objective, {after[before[id(p)]]: m for p, m in by_param.items()})


@contextlib.contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Accumulate this micro-batch's gradients locally (FSDP2 reduce-scatters them otherwise)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def gathered(value: Tensor) -> Tensor:
    """``value`` whole on every process: a DTensor's full tensor, a plain tensor itself."""
    return value.full_tensor() if is_dtensor(value) else value


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s whole state dict on CPU on every process, gathered when it is sharded (a
    collective: every process calls it)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().cpu() for k, v in state.items()}


def shard_shapes(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict as meta tensors of the global shapes: what a sharded checkpoint's
    small file keeps to check that it fits the model before the shards are read."""
    return {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}


def save_shards(model: nn.Module, optimizer: ObjectiveOptimizer, folder: Path) -> None:
    """Every process writes its shards of the model and the optimizer states to ``folder``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)


def load_shards(model: nn.Module, optimizer: ObjectiveOptimizer, folder: Path) -> None:
    """Read the shards in ``folder`` into ``model`` and ``optimizer`` (a fresh one: its states
    are created first, as torch's distributed checkpoint loads into existing tensors)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    optimizer.init_state()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    target: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(target, checkpoint_id=folder)
    set_state_dict(
        model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optimizer"]
    )


def groups_only(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer state dict without its per-parameter states: its kind and groups, enough
    to refuse another optimizer's checkpoint before reading any shard."""
    return {**state_dict, "state": {}}
