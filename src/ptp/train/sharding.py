"""FSDP2 for :func:`ptp.train.distill` (``fsdp=true``): the base and the adapter sharded across the processes.

Each decoder layer of the base model is one ``fully_shard`` unit (its frozen weights and its LoRA weights together);
the PTPModel itself is the root unit (embeddings, final norm, head, u embedding). A forward all-gathers the weights
of one unit at a time, so every process must make the same forward calls in the same order; gathering the full
weights for a save is a collective too (:func:`full_trainable_state`, :func:`full_optimizer_state`).
"""

from __future__ import annotations

import torch
from torch import nn


def decoder_layers(base: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a Hugging Face model: modules of the classes its ``_no_split_modules`` names, else the
    entries of its longest ``nn.ModuleList``. Innermost first, so that nested units are sharded before their
    parents."""
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        lists = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
        layers = list(max(lists, key=len)) if lists else []
    if not layers:
        raise ValueError(f"fsdp: cannot find the decoder layers of {type(base).__name__}")
    return layers[::-1]


def shard(model: nn.Module, base: nn.Module, device: torch.device, world: int) -> nn.Module:
    """``fully_shard`` each decoder layer of ``base`` and then ``model`` (in place) over ``world`` processes of
    ``device``'s type; parameters move to ``device`` unit by unit, so the full base never has to fit it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for layer in decoder_layers(base):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Put every unit's sharded parameters back in place: after a forward without backward (no gradient), the root
    unit keeps its gathered parameters, and ``named_parameters`` would not name the sharded ones the optimizer holds."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _full(value: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) trainable parameters by name, on the CPU; a collective: every process must call it. Only
    the trainable parameters are gathered (the frozen base, the bulk of the weights, is never assembled)."""
    reshard(model)
    return {name: _full(p.detach()).cpu() for name, p in model.named_parameters() if p.requires_grad}


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> None:
    """``clip_grad_norm_`` for sharded gradients: the norm is over the full gradients of all processes."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = _full(torch.nn.utils.get_total_norm(grads))
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's full state (parameters named, tensors on the CPU); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    reshard(model)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore what :func:`full_optimizer_state` returned (every process passes the full state; each keeps its
    shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    reshard(model)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)
