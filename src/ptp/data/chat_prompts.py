"""Chat prompts for distillation, built offline from the documentation of the running Python.

A drafter is trained on the teacher's own completions of prompts, so the prompts decide which part of the teacher's
distribution it learns: a set of one kind teaches one kind of answer. This module builds chat prompts of many task
families (code, explanation, comparison, arithmetic, reasoning, writing, roleplay, summarisation, translation,
extraction, question answering, multi-turn chats), each phrased by many templates, and fills them from material
that every Python installation carries: the docstrings, source code and language reference (``pydoc_data``) of the
standard library, optionally of the installed site-packages, plus word lists and random numbers drawn here. The
only inputs are the seed, the count and the Python installation, so the set is the same wherever that Python is.

Evaluation sets are kept out as the prompts are drawn: a prompt whose user turn collides with an evaluation turn
(see :mod:`ptp.data.overlap`) is dropped and another is drawn in its place.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import json
import linecache
import pkgutil
import random
import re
import sys
import sysconfig
import textwrap
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ptp.data.chat_tasks import FAMILIES
from ptp.data.dataset import atomic_write_bytes
from ptp.data.overlap import NEAR_NGRAM, EvaluationIndex, normalise, overlap_report

#: Modules never imported or walked: ``antigravity`` opens a browser, ``this`` prints, ``idlelib``, ``tkinter`` and
#: ``turtle*`` want a display, ``readline`` may write terminal codes, ``lib2to3`` may write grammar caches, ``test``
#: is the test suite, ``encodings`` is hundreds of alike codecs, ``pydoc_data`` is read as the language reference,
#: ``posix`` is documented through ``os``, and ``distutils`` may be setuptools' copy (so the set would depend on it).
SKIPPED_MODULES = frozenset(
    {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "readline", "lib2to3", "test", "site",
     "encodings", "pydoc_data", "posix", "distutils"}
)  # fmt: skip
#: Passages of documentation shown in a prompt: words, at least and at most.
PASSAGE_WORDS = (40, 220)
#: Sentences given for translation: words, at least and at most.
SENTENCE_WORDS = (8, 40)
#: Source snippets shown in a prompt: lines, at least and at most.
SNIPPET_LINES = (3, 30)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_SIGNATURE_LINE = re.compile(r"[\w.]+\s*\(")


@dataclass(frozen=True)
class DocItem:
    """One documented object: a module, class, function or method, or a section of the language reference."""

    name: str
    """Dotted name (``json.dumps``, ``collections.OrderedDict.move_to_end``), or a reference section's title."""
    kind: str
    """``module``, ``class``, ``function``, ``method`` or ``topic``."""
    summary: str
    """The first sentence of its documentation (ends with a full stop)."""
    module: str = ""
    """The module it is documented in (``json`` for ``json.dumps``); empty for a reference section."""
    signature: str = ""
    """``(obj, *, indent=None)`` for a callable whose signature is known, else empty."""
    passages: tuple[str, ...] = ()
    """Prose of its documentation in passages of :data:`PASSAGE_WORDS` words (paragraphs joined by blank lines)."""
    source: str = ""
    """Its source code without the docstring (functions of :data:`SNIPPET_LINES` lines), else empty."""

    @property
    def short(self) -> str:
        """The last part of the name (``dumps`` for ``json.dumps``)."""
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Documentation:
    """What the task families draw from: the documented objects and their prose, in a deterministic order."""

    callables: tuple[DocItem, ...]
    """Functions, methods and classes with a summary and a signature."""
    snippets: tuple[DocItem, ...]
    """Functions with short source code."""
    modules: tuple[DocItem, ...]
    """Modules with a summary."""
    topics: tuple[DocItem, ...]
    """Sections of the language reference."""
    passages: tuple[tuple[DocItem, str], ...]
    """(owner, passage) pairs of every item with prose."""
    sentences: tuple[str, ...]
    """Single prose sentences of :data:`SENTENCE_WORDS` words."""


def harvest_documentation(site_packages: bool = False) -> Documentation:
    """The documentation of the standard library (and of site-packages' top-level modules with ``site_packages``).

    Modules are imported in sorted order with their output swallowed and warnings silenced; one that fails to
    import is skipped (another platform's module, a missing optional library). Cached per argument.
    """
    return _harvest(bool(site_packages))


@lru_cache(maxsize=2)
def _harvest(site_packages: bool) -> Documentation:
    modules = _stdlib_modules()
    if site_packages:
        modules += _site_modules({m.__name__.split(".")[0] for m in modules})
    walked = {m.__name__ for m in modules}
    claimed: set[int] = set()  # ids of objects already listed, so that a re-exported object appears once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated attributes (``typing.io``) warn when read
        items = [item for module in modules for item in _module_items(module, walked, claimed)] + _topics()
    if not items:
        raise RuntimeError("no documented object found in the standard library")
    passages = tuple((item, passage) for item in items for passage in item.passages)
    sentences = dict.fromkeys(s for _, passage in passages for s in _sentences(passage))
    return Documentation(
        callables=tuple(i for i in items if i.kind in ("class", "function", "method") and i.signature),
        snippets=tuple(i for i in items if i.source),
        modules=tuple(i for i in items if i.kind == "module"),
        topics=tuple(i for i in items if i.kind == "topic"),
        passages=passages,
        sentences=tuple(sentences),
    )


def _module_items(module, walked: set[str], claimed: set[int]) -> list[DocItem]:
    """The module, its public classes and functions, and the classes' public methods, in sorted order."""
    name = module.__name__
    found = [_doc_item(name, "module", module, name)]
    for attribute, obj in sorted(vars(module).items()):
        if attribute.startswith("_") or not _documentable(obj) or id(obj) in claimed:
            continue
        owner = getattr(obj, "__module__", None) or ""
        # An object belongs to the module that defines it; one defined in a private module (``_io``), to the first
        # public module that exposes it.
        if owner != name and (owner in walked or not _belongs(owner, name)):
            continue
        claimed.add(id(obj))
        # Builtins are known by their bare names (``len``, ``str.join``).
        qualified = attribute if name == "builtins" else f"{name}.{attribute}"
        found.append(_doc_item(qualified, "class" if inspect.isclass(obj) else "function", obj, name))
        if inspect.isclass(obj):
            for method, value in sorted(vars(obj).items()):
                if not method.startswith("_") and _documentable(value) and not inspect.isclass(value):
                    found.append(_doc_item(f"{qualified}.{method}", "method", value, name))
    return [item for item in found if item is not None]


def _belongs(owner: str, module: str) -> bool:
    """Whether an object defined in ``owner`` (a module not walked) may be listed under ``module``."""
    top = module.split(".")[0]
    return owner.startswith("_") or owner.split(".")[0] == top or owner == "builtins"


def _documentable(obj) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethoddescriptor(obj)


def _quiet_import(name: str):
    """The module, or None if importing it fails; its output and warnings are swallowed."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        # Importing arbitrary modules is the point here: any failure (a platform's module, a missing dependency, a
        # package that exits when imported) means the module is not documentation this machine can offer.
        except (Exception, SystemExit):
            return None


def _stdlib_modules() -> list:
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    found = []

    def walk(name: str) -> None:
        module = _quiet_import(name)
        if module is None:
            return
        file = getattr(module, "__file__", None)
        # A module found elsewhere (site-packages shadowing a standard name) is not the standard library's.
        if file is not None and (root not in Path(file).resolve().parents or "site-packages" in Path(file).parts):
            return
        found.append(module)
        for info in sorted(pkgutil.iter_modules(getattr(module, "__path__", [])), key=lambda i: i.name):
            if not info.name.startswith("_") and info.name not in ("test", "tests"):
                walk(f"{name}.{info.name}")

    for name in sorted(sys.stdlib_module_names):
        if not name.startswith("_") and name not in SKIPPED_MODULES:
            walk(name)
    return found


def _site_modules(known: set[str]) -> list:
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    names = sorted({i.name for i in pkgutil.iter_modules(paths)} - known)
    modules = [_quiet_import(n) for n in names if not n.startswith("_") and n not in SKIPPED_MODULES]
    return [m for m in modules if m is not None]


def _doc_item(name: str, kind: str, obj, module: str) -> DocItem | None:
    """The item, or None if ``obj`` has no usable documentation (no prose, or a memory address in it)."""
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else ""
    paragraphs = _paragraphs(inspect.cleandoc(doc), name.rsplit(".", 1)[-1])
    summary = _first_sentence(paragraphs[0]) if paragraphs else ""
    if not summary or _ADDRESS.search(doc):
        return None
    signature = ""
    if kind != "module":
        # inspect evaluates the text signatures of C functions, which fails in many ways (a name it cannot resolve
        # raises NameError or AttributeError); such an object simply has no signature to show.
        with contextlib.suppress(Exception):
            signature = str(inspect.signature(obj))
        signature = "" if _ADDRESS.search(signature) or len(signature) > 200 else signature
    source = _snippet(obj) if kind != "module" else ""
    return DocItem(name, kind, summary, module, signature, _passages(paragraphs), source)


def _topics() -> list[DocItem]:
    """Sections of the language reference that ``help()`` shows, titled by their first line."""
    topics = getattr(_quiet_import("pydoc_data.topics"), "topics", {})
    items = []
    for key in sorted(topics):
        title, _, body = topics[key].strip().partition("\n")
        paragraphs = _paragraphs(body.strip("*\n "), "")
        if paragraphs:
            summary = _first_sentence(paragraphs[0])
            items.append(DocItem(title.strip(), "topic", summary, passages=_passages(paragraphs)))
    return items


def _paragraphs(doc: str, short: str) -> list[str]:
    """The prose paragraphs of a docstring, each on one line: code, grammar, lists and doctests left out."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if not lines or (short and lines[0].startswith(short) and _SIGNATURE_LINE.match(lines[0])):
            continue  # a signature line, as older builtins start their docstring
        if any(line[:1].isspace() or line.lstrip().startswith((">>>", "*", "-", "=", "|", ":")) for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        words = text.split()
        # Prose only: mostly words, and finished (a paragraph ending in a colon introduces a list left out here).
        prose = sum(w.isalpha() for w in words) >= 0.6 * len(words) and text.endswith((".", "!", "?", ")"))
        if len(words) >= 4 and prose and "::=" not in text:
            paragraphs.append(text)
    return paragraphs


def _first_sentence(paragraph: str) -> str:
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph, maxsplit=1)[0].strip()
    if len(sentence.split()) < 3 or len(sentence.split()) > 40 or _ADDRESS.search(sentence):
        return ""
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


def _passages(paragraphs: list[str]) -> tuple[str, ...]:
    """Consecutive paragraphs joined while they fit :data:`PASSAGE_WORDS`; shorter remainders are dropped."""
    low, high = PASSAGE_WORDS
    passages, current = [], []
    for paragraph in paragraphs:
        if current and len(" ".join(current + [paragraph]).split()) > high:
            passages.append(current)
            current = []
        if len(paragraph.split()) <= high:
            current.append(paragraph)
    passages.append(current)
    return tuple("\n\n".join(p) for p in passages if p and len(" ".join(p).split()) >= low)


def _sentences(passage: str) -> list[str]:
    low, high = SENTENCE_WORDS
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", passage.replace("\n\n", " "))
    return [s for s in sentences if low <= len(s.split()) <= high and s.endswith(".") and "``" not in s]


def _snippet(obj) -> str:
    """The function's source without its docstring, dedented; empty for builtins and long functions."""
    obj = inspect.unwrap(obj)  # a decorated function's own code, not its wrapper's
    if not inspect.isfunction(obj):
        return ""
    source, tree = _source(obj.__code__)
    function = tree.body[0] if tree is not None and tree.body else None
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or function.name != obj.__code__.co_name:
        return ""  # no source, or a lambda
    lines = source.splitlines()
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        if len(body) == 1:
            return ""
        del lines[body[0].lineno - 1 : body[0].end_lineno]
    low, high = SNIPPET_LINES
    text = "\n".join(line.rstrip() for line in lines if line.strip())
    return text if low <= len(text.splitlines()) <= high and not _ADDRESS.search(text) else ""


def _source(code) -> tuple[str, ast.Module | None]:
    """The dedented source of a function's code object and its syntax tree, or ``("", None)``.

    ``inspect.getsource`` finds a function's end by tokenizing from its start, the slowest step of the harvest. The
    line numbers of the code (and of the functions nested in it) give the end directly, up to closing brackets on
    lines of their own, which are added one at a time until the text parses.
    """
    last = _last_line(code)
    if last is None or last - code.co_firstlineno > 2 * SNIPPET_LINES[1]:
        return "", None  # too long to be kept anyway
    lines = linecache.getlines(code.co_filename)
    for end in range(last, min(last + 4, len(lines)) + 1):
        source = textwrap.dedent("".join(lines[code.co_firstlineno - 1 : end]))
        with contextlib.suppress(SyntaxError):
            return source, ast.parse(source)
    return "", None


def _last_line(code) -> int | None:
    numbers = [line for _, _, line in code.co_lines() if line is not None]
    numbers += [n for const in code.co_consts if inspect.iscode(const) for n in [_last_line(const)] if n is not None]
    return max(numbers, default=None)


@dataclass
class ChatPromptSet:
    """Built prompts and what was dropped on the way."""

    records: list[dict]
    """``{"messages": [{"role", "content"}, ...], "category": str}``; the last message is the user's."""
    seed: int
    dropped: Counter = field(default_factory=Counter)
    """Drawn prompts dropped: ``exact`` and ``near`` (collisions with the evaluation sets), ``repeat`` (a prompt
    already in the set)."""
    evaluation: tuple[str, ...] = ()
    """The evaluation files kept out."""
    site_packages: bool = False
    """Whether site-packages were drawn from too."""

    def report(self) -> dict:
        """Size, prompts per category, mean length (words and characters of all messages), the drops, and a check of
        the final set against the evaluation files, independent of the filter that built it (``exact_left`` and
        ``near_left`` are 0)."""
        texts = [" ".join(m["content"] for m in r["messages"]) for r in self.records]
        size = max(len(texts), 1)
        left = [overlap_report(self.records, path) for path in self.evaluation]
        return {
            "size": len(self.records),
            "seed": self.seed,
            "python": ".".join(map(str, sys.version_info[:3])),
            "site_packages": self.site_packages,
            "categories": dict(sorted(Counter(r["category"] for r in self.records).items())),
            "mean_words": round(sum(len(x.split()) for x in texts) / size, 1),
            "mean_chars": round(sum(len(x) for x in texts) / size, 1),
            "max_words": max((len(x.split()) for x in texts), default=0),
            "multi_turn": sum(sum(m["role"] == "user" for m in r["messages"]) > 1 for r in self.records),
            "dedup": {
                "evaluation": list(self.evaluation),
                "ngram": NEAR_NGRAM,
                "exact_removed": self.dropped["exact"],
                "near_removed": self.dropped["near"],
                "repeats_redrawn": self.dropped["repeat"],
                "exact_left": sum(r["exact"] for r in left),
                "near_left": sum(r["near"] for r in left),
            },
        }


def build_chat_prompts(
    count: int, seed: int = 0, exclude: Sequence[str | Path] = (), site_packages: bool = False
) -> ChatPromptSet:
    """``count`` distinct chat prompts; the categories of :data:`~ptp.data.chat_tasks.FAMILIES` take turns, so each
    holds ``count / len(FAMILIES)`` of them (one more for the first ``count % len(FAMILIES)``).

    Args:
        count: prompts to build.
        seed: the random draws (templates, word lists, documentation items, numbers).
        exclude: evaluation files (JSONL with ``turns``, ``messages`` or ``prompt``); a prompt whose user turn
            equals one of theirs after normalisation, or shares :data:`~ptp.data.overlap.NEAR_NGRAM` consecutive
            words with one, is dropped and redrawn.
        site_packages: also draw from the documentation of installed site-packages (the set then depends on them).
    Returns:
        the prompts in a random order, with counts of what was dropped.
    Raises:
        ValueError: ``count`` is not positive, or a category cannot give that many distinct prompts.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    docs = harvest_documentation(site_packages)
    index = EvaluationIndex(exclude) if exclude else None
    rng = random.Random(seed)
    result = ChatPromptSet([], seed, evaluation=tuple(str(p) for p in exclude), site_packages=site_packages)
    seen: set[str] = set()
    categories = tuple(FAMILIES)
    failures = 0
    while len(result.records) < count:
        category = categories[len(result.records) % len(categories)]
        messages = FAMILIES[category](rng, docs)
        key = normalise(" ".join(f"{m['role']} {m['content']}" for m in messages))
        collision = index.collision([m["content"] for m in messages if m["role"] == "user"]) if index else None
        if collision is None and key not in seen:
            seen.add(key)
            result.records.append({"messages": messages, "category": category})
            failures = 0
            continue
        result.dropped[collision or "repeat"] += 1
        failures += 1
        if failures > 1000:
            raise ValueError(f"category {category!r} gives no new prompt after 1000 draws; ask for fewer than {count}")
    rng.shuffle(result.records)
    return result


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    """Write one JSON object per line, atomically (a temporary file in the same directory, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
    return path
