"""ptp.default_model without the real model: where the cache lives, what a missing teacher package says, and how a
directory records its conversion (the conversion itself runs in test_default_model_integration.py)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from ptp import default_model
from ptp.default_model import INSTALL_TEACHER, SOURCE_RECORD, cache_dir, converted_from, teacher_gguf


def test_the_cache_is_ptp_cache_else_xdg_cache_home_else_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PTP_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("PTP_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "ptp-lm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ptp-lm"


def test_a_missing_teacher_package_or_file_is_one_line_naming_the_install_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(default_model.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="is not installed") as error:
        teacher_gguf()
    assert INSTALL_TEACHER in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setattr(default_model.metadata, "files", lambda name: [])  # installed, but without the file
    with pytest.raises(FileNotFoundError, match="reinstall it") as error:
        teacher_gguf()
    assert INSTALL_TEACHER in str(error.value)


def test_a_conversion_is_recognised_by_its_record_alone(tmp_path):
    assert converted_from(tmp_path / "absent") is None
    (tmp_path / SOURCE_RECORD).write_text("{not json")
    assert converted_from(tmp_path) is None
    (tmp_path / SOURCE_RECORD).write_text(json.dumps({"file": "m.gguf", "sha256": "ab" * 32}))
    assert converted_from(tmp_path) == "ab" * 32
    (tmp_path / SOURCE_RECORD).write_text(json.dumps(["a list"]))
    assert converted_from(tmp_path) is None


def test_converting_a_file_that_is_not_there_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        default_model.convert_gguf(Path(tmp_path / "none.gguf"))
