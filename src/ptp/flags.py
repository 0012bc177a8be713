"""Command-line flags generated from the config dataclasses, so that a setting is declared once: its field.

Every config dataclass documents each field with a string literal right below it. :func:`config_fields` reads a
class from its source file with ``ast``, following its base classes, without importing it: the configs live next to
the code that uses them, which imports torch, and ``ptp <command> --help`` must stay fast. :func:`add_config_flags`
turns the fields into argparse options (the type from the annotation, the help from the field's docstring, its
default shown), and :func:`given` reads back the values the user gave; a field left out keeps the dataclass's default
(or the value of a config file the command reads).

A field of type ``bool`` becomes ``--name`` / ``--no-name``; ``int``, ``float`` and ``str`` take one value;
``tuple[str, ...]`` is repeatable; anything else (a dict, ``int | list[int]``) takes JSON.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import operator
import re
from dataclasses import MISSING, dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).parent

#: The default of a field whose default is computed (``field(default_factory=...)``, or an expression of names).
COMPUTED = object()


@dataclass(frozen=True)
class ConfigField:
    """One field of a config dataclass, as its source declares it."""

    name: str
    annotation: str
    """The annotation's source text, e.g. ``int | None``."""
    default: object
    """The default value; ``dataclasses.MISSING`` for a required field, :data:`COMPUTED` when not a plain value."""
    default_text: str
    """The default as the help shows it."""
    doc: str
    """The docstring below the field ('' if none)."""


def config_fields(target: str) -> tuple[ConfigField, ...]:
    """The fields of the dataclass ``target`` (``"ptp.train.config:DistillConfig"``) in dataclass order: the base
    classes' first, a redeclared field where its base declared it."""
    module, name = target.split(":")
    return _fields(module, name)


@cache
def _fields(module: str, name: str) -> tuple[ConfigField, ...]:
    tree = _tree(module)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if node is None:
        raise ValueError(f"no class {name} in {module}")
    found: dict[str, ConfigField] = {}
    for base in node.bases:
        if isinstance(base, ast.Name):
            found.update({f.name: f for f in _fields(*_where(module, base.id))})
    for i, statement in enumerate(node.body):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        annotation = ast.unparse(statement.annotation)
        if annotation.startswith("ClassVar"):
            continue
        default, text = _default(statement.value, module)
        following = node.body[i + 1] if i + 1 < len(node.body) else None
        doc = ""
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            doc = inspect.cleandoc(str(following.value.value))
        found[statement.target.id] = ConfigField(statement.target.id, annotation, default, text, doc)
    return tuple(found.values())


@cache
def _tree(module: str) -> ast.Module:
    parts = module.split(".")
    if parts[0] != "ptp":
        raise ValueError(f"{module} is not a module of this package")
    path = ROOT.joinpath(*parts[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"))


def _where(module: str, name: str) -> tuple[str, str]:
    """The module that defines ``name`` as ``module`` sees it: itself, or the one it imports the name from."""
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == name for a in node.names):
            return node.module, name
    return module, name


_OPERATORS = {ast.LShift: operator.lshift, ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub,
              ast.Pow: operator.pow, ast.Div: operator.truediv, ast.USub: operator.neg}  # fmt: skip


def _default(node: ast.expr | None, module: str) -> tuple[object, str]:
    """A field's default value and its text for the help."""
    if node is None:
        return MISSING, ""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "field":
        given = {k.arg: k.value for k in node.keywords}
        if "default" in given:
            return _default(given["default"], module)
        return COMPUTED, "computed"
    try:
        value = _value(node, module)
    except (ValueError, TypeError, KeyError):
        return COMPUTED, ast.unparse(node)
    return value, _show(value)


def _value(node: ast.expr, module: str):
    """Evaluate a default: a literal, arithmetic on literals, or another dataclass's field (``Settings.name``)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left, module), _value(node.right, module))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.operand, module))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        fields = {f.name: f for f in _fields(*_where(module, node.value.id))}
        if fields[node.attr].default in (MISSING, COMPUTED):
            raise ValueError(f"{ast.unparse(node)} has no plain default")
        return fields[node.attr].default
    return ast.literal_eval(node)


def _show(value) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e4:
        return f"{value:g}"
    return str(value)


def add_config_flags(
    parser: argparse.ArgumentParser,
    target: str,
    *,
    exclude: tuple[str, ...] = (),
    renames: dict[str, str] | None = None,
    aliases: dict[str, tuple[str, ...]] | None = None,
    defaults: dict[str, object] | None = None,
) -> tuple[str, ...]:
    """Add one option per field of the dataclass ``target`` (see :func:`config_fields`) to ``parser``.

    Args:
        exclude: fields that are not flags (the command sets them otherwise).
        renames: field -> flag name (without ``--``); default: the field's name with ``-`` for ``_``.
        aliases: field -> further option strings (older spellings).
        defaults: field -> a default the command gives where the dataclass has none or another one.
    Returns:
        The names of the fields added, for :func:`given`.
    """
    renames, aliases, defaults = renames or {}, aliases or {}, defaults or {}
    added = []
    for f in config_fields(target):
        if f.name in exclude:
            continue
        flag = "--" + renames.get(f.name, f.name.replace("_", "-"))
        names = (flag, *aliases.get(f.name, ()))
        default = defaults.get(f.name, f.default)
        shown = _show(default) if f.name in defaults else f.default_text
        required = default is MISSING
        help_text = _help(f.doc) + ("" if required else f" (default: {shown})")
        options: dict = {"dest": f.name, "help": help_text, "default": argparse.SUPPRESS}
        if f.name in defaults:
            options["default"] = default
        kind = _kind(f.annotation)
        if kind is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **options)
        elif kind == "repeat":
            parser.add_argument(*names, action="append", metavar="VALUE", required=required, **options)
        elif kind == "json":
            parser.add_argument(*names, type=_json, metavar="JSON", required=required, **options)
        else:
            parser.add_argument(*names, type=kind, required=required, **options)
        added.append(f.name)
    return tuple(added)


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The values of the fields ``names`` that the command line set (or that have a command default)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


_SIMPLE = {"bool": bool, "int": int, "float": float, "str": str}


def _kind(annotation: str):
    """bool, int, float or str; ``"repeat"`` for ``tuple[str, ...]``; ``"json"`` for anything else."""
    members = [m.strip() for m in annotation.split("|") if m.strip() != "None"]
    simple = [_SIMPLE[m] for m in members if m in _SIMPLE]
    if len(simple) == len(members) == 1:
        return simple[0]
    if str in simple:  # e.g. "str | list[str]": the plain spelling on the command line
        return str
    if members in (["tuple[str, ...]"], ["list[str]"]):
        return "repeat"
    return "json"


def _json(text: str):
    """A JSON value, or the text itself if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _help(doc: str) -> str:
    """A docstring as argparse help: one paragraph, reST roles and literals plain, ``%`` escaped."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return " ".join(text.split()).replace("%", "%%")
