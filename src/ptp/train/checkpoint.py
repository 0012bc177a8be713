"""Atomic, resumable training checkpoints.

A checkpoint is a directory ``<run_dir>/checkpoints/step-NNNNNNN`` holding ``adapter/`` (written by the model's
``save_pretrained``: a :class:`ptp.PTPModel`'s adapter, or the whole Hugging Face model of a ``ptp train --objective
ar`` run; loadable on its own) and ``trainer_state.pt`` (step, optimizer and scheduler state, the config). It is
assembled under a hidden temporary name and renamed into place, so a killed run leaves either a complete checkpoint
or none: resuming never sees half a checkpoint. Randomness needs no saved state: the trainer derives every step's
generators from ``(seed, step, process)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
STATE = "trainer_state.pt"
PREFIX = "step-"

#: Config fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = frozenset(
    {
        "resume",
        "progress",
        "device",
        "run_dir",
        "out",
        "log_interval",
        "eval_interval",
        "eval_rows",
        "checkpoint_interval",
        "keep_checkpoints",
        "max_time",
        "compile",
        "profile_steps",
    }
)


def default_run_dir(out: str, run_dir: str | None) -> Path:
    """``run_dir``, or by default ``<out>.run`` next to the output directory."""
    if run_dir:
        return Path(run_dir)
    path = Path(out)
    return path.with_name(path.name + ".run")


def check_writable(directory: str | Path, what: str) -> Path:
    """Make sure ``directory`` can be written, or created and then written, without creating it (a run refused later,
    e.g. for bad data, leaves nothing behind): its nearest existing ancestor must be a directory that takes a file.
    ValueError otherwise."""
    directory = Path(directory)
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test."):
            pass
    except OSError as error:
        raise ValueError(f"cannot write the {what} to {directory}: {error}") from error
    return directory


def save_checkpoint(
    run_dir: str | Path, step: int, model, state: dict, keep: int, model_state: dict | None = None
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep``.

    Args:
        model: the :class:`ptp.PTPModel` or Hugging Face model (unwrapped).
        state: what :func:`load_checkpoint` returns besides the adapter (optimizer, scheduler, config, ...).
        model_state: the full weights of a sharded :class:`ptp.PTPModel` (its ``save_pretrained``'s ``state_dict``).
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        model.save_pretrained(staging / ADAPTER, state_dict=model_state)  # None: the model's own weights
        with (staging / STATE).open("wb") as handle:
            torch.save({**state, "step": step}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            retired = root / f".{final.name}.old"
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
            shutil.rmtree(retired, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories of killed saves are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def remove_stale(run_dir: str | Path) -> None:
    """Delete what killed saves left behind (hidden staging directories)."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for stale in root.glob(f".{PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(path: str | Path) -> dict:
    """The trainer state of a checkpoint directory (the adapter is loaded with ``PTPModel.from_pretrained``)."""
    path = Path(path)
    file = path / STATE
    if not file.is_file() or not (path / ADAPTER).is_dir():
        raise ValueError(f"checkpoint {path} is incomplete ({STATE} or {ADAPTER}/ missing)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged pickle; all mean the same here
        raise ValueError(f"checkpoint {file} is corrupt: {error}") from error


def check_resumable(saved: dict, current: dict) -> None:
    """ValueError if the saved run's config differs from the current one in a field that changes the result."""
    differs = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if differs:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differs)
        raise ValueError(f"cannot resume: the config differs from the checkpoint's in {details}")


def newest_checkpoint(run_dir: Path, config: dict, resume: bool) -> dict | None:
    """The state of the run's newest checkpoint (its directory under ``"path"``) when resuming, None for a fresh run.

    ValueError if there is nothing to resume, if the config differs from the checkpoint's in a field that changes the
    result, or if a fresh run would mix its checkpoints with an earlier run's.
    """
    checkpoints = list_checkpoints(run_dir)
    if not resume:
        if checkpoints:
            raise ValueError(f"{run_dir} already holds checkpoints of a run: pass resume, or choose another run_dir")
        return None
    if not checkpoints:
        raise ValueError(f"nothing to resume: {run_dir} holds no checkpoint")
    state = load_checkpoint(checkpoints[-1])
    check_resumable(state["config"], config)
    return {**state, "path": checkpoints[-1]}
