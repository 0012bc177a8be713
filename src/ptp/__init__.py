"""ptp-lm: Parallel Token Prediction for Hugging Face causal language models.

Layout, along the data flow: :mod:`ptp.sampling` (S and Pick) -> :mod:`ptp.model` (u embeddings, gated LoRA,
PTPModel) -> :mod:`ptp.decode` (reference sampler, budget, engine).
"""

from ptp.decode.engine import generate
from ptp.decode.inputs import GenerationOutput
from ptp.decode.reference import sample_autoregressive
from ptp.default_model import load_default
from ptp.model.config import PTPConfig
from ptp.model.ptp import PTPModel
from ptp.sampling import SamplingConfig, bins, pick, probabilities

__all__ = [
    "GenerationOutput",
    "PTPConfig",
    "PTPModel",
    "SamplingConfig",
    "bins",
    "generate",
    "load_default",
    "pick",
    "probabilities",
    "sample_autoregressive",
]
__version__ = "0.1.0"
