"""The package's layering (docs/architecture.md): at import time a module imports only its own stage and the stages
before it along the data flow, so there is no import cycle between stages."""

from __future__ import annotations

import ast
from pathlib import Path

import ptp

#: The stages of the data flow, in order; a module may import its own stage and the ones before it.
STAGES = (
    "compat", "runtime", "sampling", "model", "loading", "decode", "data", "train", "bench", "science", "serve",
    "default_model", "demo", "chat", "flags", "cli",
)  # fmt: skip
ROOT = Path(ptp.__file__).parent


def _stage(module: str) -> str:
    """``ptp.train.loop`` -> ``train``."""
    return module.split(".")[1]


def _module_level_imports(path: Path) -> set[str]:
    """The ``ptp.*`` modules a file imports when it is imported (imports inside functions run later, if at all)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ptp."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ptp."))
    return found


def test_every_module_imports_only_its_stage_and_the_stages_before_it():
    backward = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "__init__.py":  # the package's front door re-exports from every stage
            continue
        module = ".".join(("ptp", *path.relative_to(ROOT).with_suffix("").parts))
        own = STAGES.index(_stage(module))
        backward += [f"{module} -> {name}" for name in _module_level_imports(path) if STAGES.index(_stage(name)) > own]
    assert not backward, f"imports against the data flow: {backward}"


def test_the_model_reaches_the_engine_only_when_generate_is_called():
    """``PTPModel.generate`` is a convenience over :func:`ptp.decode.engine.generate`; the engine imports the model,
    never the other way round at import time."""
    model_imports = set().union(*(_module_level_imports(p) for p in (ROOT / "model").glob("*.py")))
    assert not {name for name in model_imports if _stage(name) == "decode"}
    assert "ptp.model.ptp" in _module_level_imports(ROOT / "decode" / "engine.py")
