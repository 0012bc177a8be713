"""Training data: prompt readers, teacher pregeneration into shards, and packing of documents into rows.

The flow is ``read_prompts`` -> ``encode_prompts`` -> ``pregenerate`` (a data directory of shards plus metadata that
records the sampling configuration, the model and the tokenizer) -> ``load_dataset`` -> ``pack_documents``.
"""

from ptp.data.dataset import Dataset, Document, load_dataset, model_fingerprint, tokenizer_fingerprint
from ptp.data.packing import PackedRows, document_mask, pack_documents, split_by_prompt
from ptp.data.pregeneration import PregenerateConfig, pregenerate, write_text_dataset
from ptp.data.prompts import Prompt, encode_prompts, read_prompts

__all__ = [
    "Dataset",
    "Document",
    "PackedRows",
    "PregenerateConfig",
    "Prompt",
    "document_mask",
    "encode_prompts",
    "load_dataset",
    "model_fingerprint",
    "pack_documents",
    "pregenerate",
    "read_prompts",
    "split_by_prompt",
    "tokenizer_fingerprint",
    "write_text_dataset",
]
