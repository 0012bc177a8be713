"""The PTP model: auxiliary embeddings, gated LoRA drafter on a frozen base, configuration."""
