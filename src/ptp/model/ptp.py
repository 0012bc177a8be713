"""PTPModel: a frozen Hugging Face causal LM that is its own teacher and, through a gated adapter, its own drafter.

One forward pass carries two kinds of query positions side by side:

* **teacher tokens**: ordinary token ids; the LoRA adapter is switched off for them, so their hidden states, KV
  cache and logits are exactly the base model's;
* **auxiliary slots**: no token, the input embedding is ``AuxiliaryEmbedding(u)``; the LoRA adapter is on.

The adapter is a gated LoRA (:mod:`ptp.model.lora`) swapped into the base model's linear layers and saved in PEFT's
format. Which positions are slots is set for the duration of one forward call; outside a call the adapter is off, so
``model.base_model`` is the untouched base model.

A PTPModel can also be a *separate drafter* next to another teacher (``generate(teacher, ..., drafter=model)``),
whose base weights may train (``train_base``; they are then saved with the adapter, in ``base/``).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import os
import shutil
import tempfile
import weakref
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from ptp.compat import cache_argument
from ptp.model import lora
from ptp.model.attention import attention_bias, use_mask_attention
from ptp.model.config import PTPConfig, read_json_object
from ptp.model.embeddings import NULL_AUXILIARY, AuxiliaryEmbedding
from ptp.model.linear import use_packed_linears
from ptp.runtime import cpu_threads

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
EMBEDDING_WEIGHTS = "auxiliary_embedding.safetensors"
#: Subdirectory of an adapter directory holding the drafter's own base model when its weights were trained.
BASE_DIRECTORY = "base"


def describe_base(model: PreTrainedModel) -> dict:
    """The facts an adapter must agree with to fit a base model."""
    config = model.config
    return {
        "model_type": config.model_type,
        "hidden_size": model.get_input_embeddings().weight.shape[1],
        "vocab_size": model.get_output_embeddings().weight.shape[0],
        "name_or_path": getattr(config, "_name_or_path", "") or "",
    }


class PTPModel(nn.Module):
    """A causal LM wrapped with a PTP drafter.

    ``PTPModel(base_model, **options)`` installs a fresh drafter (options are :class:`PTPConfig` fields, or pass
    ``config=``). The base model is modified in place (LoRA layers are swapped in, its linear layers run packed in
    float32 inference on a CPU: :mod:`ptp.model.linear`) and frozen, unless ``train_base``.

    ``.to(dtype / device)``, ``.half()``, ``.bfloat16()`` and ``.float()`` cast the base model and move everything;
    the drafter's own weights (LoRA factors, u embedding) stay float32 in any dtype, so a cast to 16 bits and back
    leaves them bit for bit as they were. A 16-bit model decodes with its LoRA update in its own dtype.
    """

    def __init__(self, base_model: PreTrainedModel, config: PTPConfig | None = None, **options):
        super().__init__()
        if isinstance(base_model, PTPModel):
            raise TypeError("base_model is a PTPModel already: use it as it is, or wrap a fresh base model")
        if not isinstance(base_model, PreTrainedModel):
            raise TypeError(f"base_model must be a transformers PreTrainedModel, got {type(base_model).__name__}")
        if any(isinstance(module, lora.GatedLoRA) for module in base_model.modules()):
            raise ValueError(
                "this base model already carries a PTP adapter (a PTPModel modifies its base in place); for a second "
                "one wrap a fresh copy (copy.deepcopy(base) before the first PTPModel, or load it again), or call "
                "load_adapter on the PTPModel that has it"
            )
        if base_model.get_output_embeddings() is None:
            raise TypeError(f"{type(base_model).__name__} has no language-model head; pass a *ForCausalLM model")
        config = copy.deepcopy(config) if config is not None else PTPConfig()
        for name, value in options.items():
            if not hasattr(config, name):
                known = [f.name for f in fields(PTPConfig)]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise TypeError(f"unknown PTP option {name!r}: {hint}the options are PTPConfig's fields {known}")
            setattr(config, name, value)
        config.__post_init__()
        base_info = describe_base(base_model)
        if config.base_model:
            _check_fits(config.base_model, base_info)
        config.base_model = base_info
        self.config = config

        prepare_base(base_model)  # before the adapter's own linear layers exist (they stay nn.Linear)
        for parameter in base_model.parameters():
            parameter.requires_grad_(config.train_base)
        self._gate = lora.Gate()
        self._targets = lora.target_names(base_model, config.target_modules)
        if not self._targets:
            name = type(base_model).__name__
            raise ValueError(f"target_modules={config.target_modules!r} matched no layer of {name}")
        lora.install(base_model, self._targets, config.lora_rank, config.lora_alpha, config.lora_dropout, self._gate)
        self.base_model = base_model
        layers = decoder_layers(base_model) if config.u_every_layer else []
        self.auxiliary_embedding = AuxiliaryEmbedding(
            config.embedding, base_info["hidden_size"], size=config.embedding_size, layers=len(layers)
        ).to(base_model.device)
        self._layer_features: torch.Tensor | None = None  # u's features of the slots in the current call
        self._layer_maps: tuple[torch.Tensor, ...] = ()  # and each layer's map of them
        owner = weakref.ref(self)  # the base's hooks must not keep this model alive (no reference cycle)
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(functools.partial(_u_into_layer, owner, index), with_kwargs=True)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.base_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base_model.dtype

    def _apply(self, fn, recurse: bool = True):
        # nn.Module.to(dtype / device), .half(), .bfloat16(), .float() end here: the base model takes the dtype, while
        # the u embedding keeps float32 as the LoRA factors do (lora.GatedLoRA._apply); a device move moves all.
        if recurse:
            for name, child in self.named_children():
                child._apply(lora.keep_dtype(fn) if name == "auxiliary_embedding" else fn)
        return super()._apply(fn, recurse=False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---------------------------------------------------------------------------------------------- forward
    def slot_auxiliaries(self, u_target: torch.Tensor, u_previous: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """The u a slot receives as input, for the drafter's mode (shared by training and decoding).

        Args:
            u_target: ``[...]`` the auxiliary of the position the slot predicts.
            u_previous: ``[...]`` the auxiliary of the position before it.
            first: bool ``[...]``, the slot is the first of its window (its previous position is context).
        """
        null = torch.full_like(u_target, NULL_AUXILIARY)
        if self.config.mode == "one_hot":
            return u_target
        if self.config.mode == "categorical":
            return torch.where(first, null, u_previous)
        return null

    def slot_tokens(self, current: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """The token id a slot receives besides its u (shared by training and decoding): its current token
        ``current`` on first slots with ``first_slot_token``, else -1 (none).

        Args:
            current: int ``[...]`` the token at the position before the one the slot predicts.
            first: bool ``[...]``, the slot is the first of its window or group (so ``current`` is known text).
        """
        if not self.config.first_slot_token:
            return torch.full_like(current, -1)
        return torch.where(first, current, -1)

    def attention_bias(self, allowed: torch.Tensor) -> torch.Tensor:
        """A bool ``[B, 1, Q, K]`` visibility mask in the form the base model's attention takes."""
        return attention_bias(self.base_model, allowed)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        auxiliaries: torch.Tensor | None = None,
        slots_from: int | None = None,
        past_key_values=None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits of a block of teacher tokens followed by auxiliary slots.

        Args:
            input_ids: int ``[B, L]``; at slot positions the slot's token from :meth:`slot_tokens` (-1: none; any
                value is ignored without ``first_slot_token``).
            position_ids: int ``[B, L]``.
            attention_mask: bool ``[B, 1, L, K]``, True where query l may see key k; K = cached length + L.
            auxiliaries: float ``[B, L - slots_from]``: the slots' inputs (see :meth:`slot_auxiliaries`).
            slots_from: positions ``slots_from:`` of every row are auxiliary slots, those before it teacher tokens.
                None: the block holds teacher tokens only.
            past_key_values: a transformers cache; the block's keys and values are appended to it.
            logits_to_keep: > 0: the logits of the last that many positions only (0: all).
        Returns:
            ``[B, L, V]`` logits (``[B, logits_to_keep, V]``).
        """
        embed = self.base_model.get_input_embeddings()
        if slots_from is None:
            inputs = embed(input_ids)
        else:
            # A slot's input is embed(u), plus its given token's embedding.
            tokens = input_ids[:, slots_from:]
            if self.config.u_every_layer:  # the features feed the input map and every layer's map (_u_into_layer)
                self._layer_features, self._layer_maps = self._features_and_maps(auxiliaries)
                slots = self.auxiliary_embedding.project(self._layer_features)
            else:
                slots = self.auxiliary_embedding(auxiliaries)
            slots = slots.to(embed.weight.dtype)
            if self.config.first_slot_token:
                slots = slots + torch.where((tokens >= 0).unsqueeze(-1), embed(tokens.clamp(min=0)), 0.0)
            inputs = torch.cat([embed(input_ids[:, :slots_from]), slots], dim=1) if slots_from else slots
        self._gate.start = slots_from
        try:
            out = self.base_model(
                inputs_embeds=inputs,
                position_ids=position_ids,
                attention_mask=self.attention_bias(attention_mask),
                use_cache=past_key_values is not None,
                logits_to_keep=logits_to_keep,
                **cache_argument(self.base_model, past_key_values),
            )
        finally:
            self._gate.start = None
            self._layer_features, self._layer_maps = None, ()
        return out.logits

    def _features_and_maps(self, auxiliaries: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """u's features of the slots and every layer's map of them, made once for all layers of a call: under autocast
        in its dtype, to which autocast would cast them in every layer (the features, a copy of each map and of its
        gradient); the maps as the views of one unbind, whose gradients are stacked once (each layer's indexing would
        give the whole stack of maps a gradient of zeros around its own, copied in and summed)."""
        features, maps = self.auxiliary_embedding.features(auxiliaries), self.auxiliary_embedding.layer_maps
        if torch.is_autocast_enabled(features.device.type):
            dtype = torch.get_autocast_dtype(features.device.type)
            features, maps = features.to(dtype), maps.to(dtype)
        return features, maps.unbind(0)

    # --------------------------------------------------------------------------------------------- generate
    def generate(self, input_ids, attention_mask=None, *, threads: int | str | None = None, **kwargs):
        """Lossless parallel generation; see :func:`ptp.decode.engine.generate` for the arguments.

        ``threads``: CPU threads torch uses for this call (restored afterwards): a count, ``"auto"`` (the choice of
        :func:`ptp.runtime.decoding_threads`, one thread on small machines, which decodes fastest there), or None
        (default): torch's current setting.
        """
        # The engine imports this module; importing the engine at call time keeps the dependency one way.
        from ptp.decode.engine import generate

        with cpu_threads(threads, self):
            return generate(self, input_ids, attention_mask, **kwargs)

    # ---------------------------------------------------------------------------------------- save and load
    def save_pretrained(self, directory: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the adapter atomically: PEFT's ``adapter_config.json`` and ``adapter_model.safetensors``, the u
        embedding (``auxiliary_embedding.safetensors``) and ``ptp_config.json``; with ``train_base`` also the base
        model (a plain Hugging Face model directory ``base/``). A killed save leaves the previous contents of
        ``directory`` (if any) untouched.

        ``state_dict``: tensors by parameter name that replace the model's own in the adapter and the u embedding
        (the full weights of a model sharded with FSDP, gathered by :func:`ptp.train.sharding.full_trainable_state`).
        """
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            c = self.config
            values = state_dict or {}
            within = {k[len("base_model.") :]: v for k, v in values.items() if k.startswith("base_model.")}
            lora.save_adapter(
                self.base_model, staging, c.lora_rank, c.lora_alpha, c.lora_dropout, self._targets, within
            )
            embedding = self.auxiliary_embedding.state_dict()
            state = {
                k: values.get(f"auxiliary_embedding.{k}", v).detach().contiguous().cpu() for k, v in embedding.items()
            }
            save_file(state, str(staging / EMBEDDING_WEIGHTS))
            if c.train_base:
                self.base_model.save_pretrained(
                    str(staging / BASE_DIRECTORY), state_dict=lora.base_state(self.base_model)
                )
            self.config.save(staging)
            _replace_directory(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def from_pretrained(
        cls,
        base_model: PreTrainedModel | str | os.PathLike | None,
        adapter_path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> PTPModel:
        """Load a trained drafter onto a base model (an object, or a path that ``AutoModelForCausalLM`` loads).

        A drafter whose base weights were trained (``train_base``) carries its base in ``base/``: pass
        ``base_model=None``.
        """
        adapter_path = Path(adapter_path)
        if not adapter_path.is_dir():
            raise FileNotFoundError(
                f"adapter directory {adapter_path} does not exist: pass the directory that save_pretrained (or ptp "
                "distill) wrote"
            )
        config = PTPConfig.load(adapter_path)
        if config.train_base:
            if base_model is not None:
                raise ValueError(
                    f"{adapter_path} holds its own trained base model ({BASE_DIRECTORY}/); pass base_model=None"
                )
            base_model = adapter_path / BASE_DIRECTORY
            if not (base_model / "config.json").is_file():
                raise FileNotFoundError(f"{base_model} is missing: the drafter's trained base model is not there")
        elif base_model is None:
            raise ValueError(
                f"{adapter_path} is an adapter without a base model of its own: pass the model it was trained on "
                "(base_model; ptp generate --model)"
            )
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, EMBEDDING_WEIGHTS):
            if not (adapter_path / name).is_file():
                raise FileNotFoundError(
                    f"{adapter_path / name} is missing: the adapter directory is incomplete (save or copy it again)"
                )
        if not isinstance(base_model, PreTrainedModel):
            base_model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype or torch.float32)
        elif dtype is not None:
            base_model = base_model.to(dtype)
        if device is not None:
            base_model = base_model.to(device)
        _check_fits(config.base_model, describe_base(base_model))
        model = cls(base_model, config)
        model.load_adapter(adapter_path)
        model.eval()
        return model

    def load_adapter(self, adapter_path: str | os.PathLike) -> None:
        """Load a saved drafter's LoRA factors and u embedding into this one (same drafter settings), or grow a
        lower-rank drafter into this one: its factors fill the first rows of A and columns of B, the rest of B is
        zero (A keeps its fresh random rows), and B is rescaled to this drafter's alpha / rank, so the drafter computes
        exactly what the saved one did until training moves the new directions."""
        adapter_path = Path(adapter_path)
        saved = PTPConfig.load(adapter_path)
        _check_adapter_config(adapter_path / ADAPTER_CONFIG, saved)
        rank = saved.lora_rank
        if rank > self.config.lora_rank:
            raise ValueError(f"{adapter_path} has LoRA rank {rank}, more than this drafter's {self.config.lora_rank}")
        expected = lora.adapter_state(self.base_model)
        adapter = _load_weights(adapter_path / ADAPTER_WEIGHTS)
        if set(adapter) != set(expected):
            unexpected, missing = sorted(set(adapter) - set(expected)), sorted(set(expected) - set(adapter))
            raise ValueError(
                f"adapter in {adapter_path} does not fit this {self.config.base_model.get('model_type')} model: "
                f"unexpected keys {unexpected[:3]}, missing keys {missing[:3]}"
            )
        rescale = (saved.lora_alpha / rank) / (self.config.lora_alpha / self.config.lora_rank)
        parameters = dict(self.base_model.named_parameters())
        with torch.no_grad():
            for key, value in adapter.items():
                target = parameters[key[len(lora.PEFT_PREFIX) :]]
                factor_b = ".lora_B." in key
                if factor_b:
                    value = value * rescale
                if rank < self.config.lora_rank:  # the saved factors fill a corner; B's other columns become 0
                    if factor_b:
                        target.zero_()
                    target = target[:, :rank] if factor_b else target[:rank]
                if target.shape != value.shape:
                    raise ValueError(
                        f"adapter weight {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                    )
                target.copy_(value)
        embedding = _load_weights(adapter_path / EMBEDDING_WEIGHTS)
        try:
            self.auxiliary_embedding.load_state_dict(embedding, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{adapter_path / EMBEDDING_WEIGHTS} does not fit this drafter: {error}") from error
        self.auxiliary_embedding.to(self.device)


def _u_into_layer(owner: weakref.ref, index: int, layer: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of decoder layer ``index`` of a :class:`PTPModel` with ``u_every_layer`` (``owner``): add the
    layer's map of u's features to the slots' rows of its input hidden states; teacher rows pass unchanged."""
    model = owner()
    if model is None or model._layer_features is None or model._gate.start is None:
        return None  # no slots in this call
    features, start = model._layer_features, model._gate.start
    hidden = args[0] if args else kwargs["hidden_states"]
    delta = (features @ model._layer_maps[index]).to(hidden.dtype)
    # Slots alone (training's slot pass): no concatenation, and no slices whose gradients would be padded.
    hidden = hidden + delta if start == 0 else torch.cat([hidden[:, :start], hidden[:, start:] + delta], dim=1)
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The base model's stack of decoder layers: its one ``nn.ModuleList`` of ``config.num_hidden_layers`` modules."""
    count = getattr(model.config, "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and count is not None and len(m) == count]
    if len(stacks) != 1:
        raise ValueError(
            f"cannot tell the decoder layers of {type(model).__name__} ({len(stacks)} lists of num_hidden_layers="
            f"{count} modules): u_every_layer needs them"
        )
    return stacks[0]


def teacher_logits(
    model,
    input_ids: torch.Tensor,
    *,
    position_ids,
    attention_mask,
    past_key_values=None,
    logits_to_keep: int = 0,
    at: torch.Tensor | None = None,
):
    """Logits ``[B, L, V]`` of a teacher over token ids under a bool ``[B, 1, L, K]`` mask (``logits_to_keep`` > 0:
    of the last that many positions only; ``at``, int ``[B, T]``: ``[B, T, V]``, of those positions of each row only,
    for which alone the language-model head runs).

    ``model`` is a :class:`PTPModel` (its frozen base, adapter off) or any causal LM (e.g. the teacher of a separate
    drafter, prepared by :func:`prepare_base`); the block's keys are appended to ``past_key_values``.
    """
    if at is not None:
        with _head_at(model, at) as ran:
            logits = teacher_logits(model, input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                    past_key_values=past_key_values, logits_to_keep=logits_to_keep)  # fmt: skip
        if ran:
            return logits
        return logits.gather(1, at.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # a head the hook did not see
    if isinstance(model, PTPModel):
        return model(input_ids, position_ids=position_ids, attention_mask=attention_mask,
                     past_key_values=past_key_values, logits_to_keep=logits_to_keep)  # fmt: skip
    return model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_bias(model, attention_mask),
        use_cache=past_key_values is not None,
        logits_to_keep=logits_to_keep,
        **cache_argument(model, past_key_values),
    ).logits


@contextlib.contextmanager
def _head_at(model, at: torch.Tensor):
    """While open, the language-model head of ``model`` (a PTPModel's base, or a causal LM) reads the hidden states
    at positions ``at`` ``[B, T]`` of its rows only (what it makes of each row is the same: elementwise steps after it,
    such as a soft cap, commute with the choice of rows); yields a list that holds True once the head has run."""
    head = (model.base_model if isinstance(model, PTPModel) else model).get_output_embeddings()
    ran: list[bool] = []

    def gather(module, args):
        ran.append(True)
        hidden = args[0]
        batch, length, width = hidden.shape
        rows = (at + length * torch.arange(batch, device=at.device).unsqueeze(1)).reshape(-1)
        return (hidden.reshape(-1, width).index_select(0, rows).view(batch, -1, width), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield ran
    finally:
        handle.remove()


def prepare_base(model: PreTrainedModel) -> None:
    """Switch a causal LM, in place, to what the calls of PTP run on: an attention that takes custom masks
    (:func:`ptp.model.attention.use_mask_attention`) and, on an x86 CPU, linear layers that run float32 inference
    packed (:func:`ptp.model.linear.use_packed_linears`). Its parameters stay, and its outputs stay the model's to
    float32 rounding. PTPModel does it to its base; the engine to a teacher it verifies with and to a plain model it
    decodes."""
    use_mask_attention(model)
    use_packed_linears(model)


def check_drafter(teacher: PreTrainedModel, drafter: PTPModel) -> None:
    """A separate drafter must be a PTPModel on the teacher's device whose vocabulary is the teacher's; the teacher
    is prepared for the engine's calls (:func:`prepare_base`)."""
    if not isinstance(drafter, PTPModel):
        raise TypeError(f"drafter must be a PTPModel, got {type(drafter).__name__}")
    if teacher.get_output_embeddings() is None:
        raise TypeError(f"{type(teacher).__name__} has no language-model head; pass a *ForCausalLM teacher")
    ours, theirs = (
        drafter.base_model.get_output_embeddings().weight.shape[0],
        teacher.get_output_embeddings().weight.shape[0],
    )
    if ours != theirs:
        raise ValueError(f"the drafter's vocabulary ({ours} tokens) differs from the teacher's ({theirs})")
    if drafter.device != teacher.device:
        raise ValueError(
            f"the drafter is on {drafter.device}, the teacher on {teacher.device}: move both to one device"
        )
    prepare_base(teacher)


def _check_fits(recorded: dict, actual: dict) -> None:
    for key in ("model_type", "hidden_size", "vocab_size"):
        if key in recorded and recorded[key] != actual[key]:
            raise ValueError(
                f"the adapter was trained for a base model with {key}={recorded[key]!r}, "
                f"but this base model has {key}={actual[key]!r}"
            )


def _check_adapter_config(path: Path, config: PTPConfig) -> None:
    """PEFT's adapter_config.json must be readable and agree with ptp_config.json on the LoRA scaling (PEFT uses
    its r and lora_alpha, this package ptp_config.json's; if they differed, the two would compute different
    drafts)."""
    lora_config = read_json_object(path)
    for key, ours in (("r", config.lora_rank), ("lora_alpha", config.lora_alpha)):
        if key in lora_config and lora_config[key] != ours:
            raise ValueError(f"{path} has {key}={lora_config[key]!r}, but ptp_config.json says {ours!r}")


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{path} is corrupt or unreadable ({reason}): save or copy the adapter again") from error


def _replace_directory(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing target is swapped out first and removed afterwards."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = target.with_name(f".{target.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
