"""Gated LoRA: a low-rank update that is active only on auxiliary slots.

``GatedLoRA`` replaces a linear layer of the base model (``nn.Linear``, or GPT-2's transposed ``Conv1D``) and computes

    y = base(x)                                   on teacher positions (bit for bit the base model's output)
    y = base(x) + B(A(dropout(x))) * alpha / r    on auxiliary slots

A shared :class:`Gate` says where the slots of the current forward call start (a block of teacher tokens is
followed by its slots, in every row alike); the update is computed for the slots' rows alone, and not at all when the
gate is unset, so teacher-only calls cost what the base model costs.

The parameters are named as PEFT names them (``<module>.lora_A.weight``, ``<module>.lora_B.weight``, the original
layer under ``<module>.base_layer``), and :func:`save_adapter` writes PEFT's ``adapter_config.json`` and
``adapter_model.safetensors``, so the files load with ``peft.PeftModel.from_pretrained`` as an ordinary (ungated)
LoRA adapter too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

#: Prefix of every key in PEFT's adapter_model.safetensors.
PEFT_PREFIX = "base_model.model."


class Gate:
    """Where the auxiliary slots of the current forward call start: positions ``start:`` of every row, or None."""

    def __init__(self) -> None:
        self.start: int | None = None


class GatedLoRA(nn.Module):
    """A linear layer plus a LoRA update gated per position by a shared :class:`Gate`."""

    def __init__(self, base_layer: nn.Module, rank: int, alpha: float, dropout: float, gate: Gate):
        super().__init__()
        if isinstance(base_layer, Conv1D):
            in_features, out_features = base_layer.weight.shape
        else:
            in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer = base_layer
        device = base_layer.weight.device
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=device, dtype=torch.float32)
        self.lora_B = nn.Linear(rank, out_features, bias=False, device=device, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        # PEFT's name: code that switches LoRA dropout alone to train mode finds it by "lora_dropout".
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / rank
        self.gate = gate
        self._cast: tuple | None = None  # (key, A, B): the factors in the dtype of an eval-mode input

    def _apply(self, fn, recurse: bool = True):
        # nn.Module.to, .half(), .bfloat16() and the like end here. The factors keep their float32 whatever the base
        # layer is cast to (training needs float32 factors; a 16-bit model decodes with copies made by _factors),
        # so that a cast to 16 bits and back leaves them bit for bit as they were; a move to a device moves them too.
        if recurse:
            for name, child in self.named_children():
                child._apply(keep_dtype(fn) if name in ("lora_A", "lora_B") else fn)
        self._cast = None
        return super()._apply(fn, recurse=False)

    def _factors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The LoRA factors in ``dtype``, cast once and kept until the weights change (inference only: training keeps
        its float32 factors)."""
        a, b = self.lora_A.weight, self.lora_B.weight
        key = (dtype, a.data_ptr(), b.data_ptr(), a._version, b._version)
        if self._cast is None or self._cast[0] != key:
            self._cast = (key, a.detach().to(dtype), b.detach().to(dtype))
        return self._cast[1], self._cast[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        start = self.gate.start
        if start is None:
            return out
        x = x[:, start:]  # the slots' rows
        a, b = self.lora_A.weight, self.lora_B.weight
        if x.dtype != a.dtype and not torch.is_autocast_enabled(x.device.type):  # autocast casts x and the factors
            if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
                x = x.to(a.dtype)  # training (whose base stays in eval mode): the float32 factors get the gradients
            elif x.device.type == "cpu":
                # A 16-bit model decoding on a CPU: these small GEMMs cost less in float32 (SmolLM2-135M's shape,
                # one thread: 27 against 60 us a layer), as in training.
                x = x.to(a.dtype)
            else:  # on a GPU the update runs in the model's dtype (float32 factors would double a call's cost)
                a, b = self._factors(x.dtype)
        if isinstance(self.lora_dropout, nn.Dropout):  # in train mode alone when training (the base stays in eval)
            x = self.lora_dropout(x)
        # The factors as plain functions, not modules, and as few kernels as possible (two): this runs in every linear
        # layer of every call. The update is added to the slots' rows of the base output in place (teacher rows are
        # the base's output exactly); autograd sees an ordinary in-place addition. Where every row is a slot (the
        # slot pass of training) it is added out of place: an in-place update of a view (of all of the output, or of
        # an output that is itself a view, as a biased layer's is) makes autograd clone the whole output's gradient
        # and copy it twice in the backward pass.
        h = F.linear(x, a)
        slots = out[:, start:]
        if out.dtype != b.dtype:  # a 16-bit base or autocast
            update = F.linear(h, b)
            if self.scaling != 1.0:  # alpha = rank: multiplying by one would copy the update (and its gradient)
                update = update * self.scaling
            if start == 0:
                return out + update.to(out.dtype)
            slots += update.to(out.dtype)
        elif start == 0 and out.is_contiguous():
            rows = torch.addmm(out.view(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(), alpha=self.scaling)
            out = rows.view(out.shape)
        elif slots.is_contiguous():
            slots.view(-1, slots.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), b.t(), alpha=self.scaling)
        else:
            slots.baddbmm_(h, b.t().expand(h.shape[0], -1, -1), alpha=self.scaling)
        return out


def keep_dtype(fn):
    """``fn``, a conversion that ``nn.Module._apply`` maps over tensors, without its change of dtype: each tensor goes
    to the device ``fn`` sends it to, in its own dtype (and is never rounded through another one)."""

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        converted = fn(tensor)
        return converted if converted.dtype == tensor.dtype else tensor.to(device=converted.device)

    return convert


def target_names(model: nn.Module, target_modules: str | list[str]) -> list[str]:
    """Full names of the layers that get an adapter.

    ``"all-linear"``: every ``nn.Linear`` / ``Conv1D`` except the output embedding (as in PEFT); a list: layers whose
    last name component is in it.
    """
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)) or module is head:
            continue
        if target_modules == "all-linear" or (
            not isinstance(target_modules, str) and name.rsplit(".", 1)[-1] in target_modules
        ):
            names.append(name)
    return names


def install(model: nn.Module, names: list[str], rank: int, alpha: float, dropout: float, gate: Gate) -> None:
    """Swap each named layer of ``model`` for a :class:`GatedLoRA` around it (in place)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, GatedLoRA(getattr(parent, child), rank, alpha, dropout, gate))


def adapter_state(model: nn.Module, values: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The LoRA weights of ``model`` under PEFT's key names; ``values`` (parameter name -> tensor) replaces the
    model's own, e.g. with the full tensors of a sharded model."""
    values = values or {}
    return {
        PEFT_PREFIX + name: values.get(name, p).detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` as it was before :func:`install`: no LoRA weights, original layer names."""
    return {
        name.replace(".base_layer.", "."): value
        for name, value in model.state_dict().items()
        if ".lora_A." not in name and ".lora_B." not in name
    }


def save_adapter(
    model: nn.Module, directory: Path, rank: int, alpha: float, dropout: float, names: list[str], values=None
) -> None:
    """Write PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` for the installed layers (``values``:
    as for :func:`adapter_state`)."""
    transposed = any(isinstance(m.base_layer, Conv1D) for m in model.modules() if isinstance(m, GatedLoRA))
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=sorted({n.rsplit(".", 1)[-1] for n in names}),
        fan_in_fan_out=transposed,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=getattr(model.config, "_name_or_path", None) or None,
    )
    config.save_pretrained(str(directory))
    # PEFT keeps target_modules as a set and writes it in hash order: sort it so equal adapters give equal files.
    written = directory / "adapter_config.json"
    fields = json.loads(written.read_text())
    if isinstance(fields.get("target_modules"), list):
        fields["target_modules"] = sorted(fields["target_modules"])
    written.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    save_file(adapter_state(model, values), str(directory / "adapter_model.safetensors"))
