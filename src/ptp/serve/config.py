"""The settings of ``ptp serve``, declared once: the command's flags take their defaults from here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass
class ServeConfig:
    """What the server loads, where it listens, and the limits it enforces."""

    model: str | None = None
    """Base model directory (a Hugging Face causal LM with its tokenizer); None: the shipped model
    (:func:`ptp.load_default`)."""
    adapter: str | None = None
    """PTP adapter directory for ``model`` (alone: an adapter that holds its own base, ``base/``). A ``model`` without
    an adapter is served plainly and needs ``use_drafter`` off."""
    host: str = "127.0.0.1"
    """Address to bind; loopback unless asked otherwise."""
    port: int = 8000
    """TCP port; 0 picks a free one."""
    api_key: str | None = None
    """When set, every ``/v1`` and ``/metrics`` request needs ``Authorization: Bearer <api_key>``."""
    max_batch: int = 8
    """Requests decoded together in one batch at most."""
    max_queue: int = 64
    """Requests waiting for a batch at most; a request beyond it is answered 429."""
    use_drafter: bool = True
    """False: one token per forward call (the same engine without drafts; the same text for the same seed)."""
    max_tokens: int = 1024
    """The most new tokens a request may ask for; also the default of a request without ``max_tokens`` (cut to what
    the context leaves)."""
    max_body_bytes: int = 1 << 20
    """Largest request body in bytes; larger bodies are answered 413."""
    served_model_name: str | None = None
    """The model id of ``/v1/models`` and of responses; None: the model directory's name (``ptp-default`` for the
    shipped model)."""
    device: str = "auto"
    """Torch device of the model: ``cpu``, ``cuda``, or ``auto`` (CUDA when available)."""
    threads: int | str | None = "auto"
    """CPU threads of torch: a count; ``auto``: :func:`ptp.runtime.decoding_threads` of the model (one on a machine of
    few cores, where more threads make a decoding step slower and spin against other work); None: torch's choice."""
    auxiliary_budget: int | None = None
    """Auxiliary slots per call of the engine (None: its default, twice the window length). On a CPU every slot costs
    compute, so a small budget decodes faster there."""
    max_draft_length: int | None = None
    """Longest draft group of the engine (None: the window length)."""
    cuda_graph: bool = True
    """On a CUDA device, replay each decoding step as a captured CUDA graph, kept per shape of the batch (places in
    powers of two, cache and new-token room in steps of 256; the 16 shapes used last), so that requests of similar
    length replay the same graphs; False: every step runs eagerly (one kernel launch per operation)."""

    def __post_init__(self) -> None:
        for name, least in (("port", 0), ("max_batch", 1), ("max_queue", 1), ("max_tokens", 1),
                            ("max_body_bytes", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.threads not in (None, "auto") and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                                   or self.threads < 1):  # fmt: skip
            raise ValueError(f"threads must be an integer >= 1, 'auto' or None, got {self.threads!r}")
        if self.port > 65535:
            raise ValueError(f"port must be at most 65535, got {self.port}")
        if self.model is not None and self.adapter is None and self.use_drafter:
            raise ValueError("a model without a PTP adapter has no drafter: pass an adapter, or serve it plainly")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
