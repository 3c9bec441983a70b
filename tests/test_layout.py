"""The package's shape, checked: the folders are layers and no import runs upward; the package
top holds only its entry points and neutral helpers; no function grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "segnet"
MODULES = sorted(PACKAGE.rglob("*.py"))

# Each layer may import only the layers listed for it (and itself); errors/files are neutral.
NEUTRAL = {"errors", "files"}
ALLOWED = {
    "models": set(),
    "data": set(),
    "metrics": set(),
    "deploy": {"models", "metrics"},
    "engine": {"models", "data", "metrics", "deploy"},
    "benchmark": {"models", "data", "metrics", "deploy", "engine"},
    "serve": {"models", "data", "metrics", "deploy", "engine"},
    "cli": {"models", "data", "metrics", "deploy", "engine", "benchmark", "serve"},
}
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "files.py"}
MAX_FUNCTION_LINES = 60
LONG_MODULES = {"data/synthetic.py"}  # one coherent thing: the procedural road-scene renderer


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _imports(source: str, package: tuple[str, ...]) -> set[str]:
    """First-level segnet packages that ``source``, a module of ``package`` (its folder parts
    below segnet/), imports -- absolute or relative, at any depth (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                found |= {target[0]} if target else {alias.name for alias in node.names}
            elif node.module and node.module.split(".")[0] == "segnet":
                parts = node.module.split(".")[1:]
                found |= {parts[0]} if parts else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("segnet.")}
    return found


def _imported_layers(path: Path) -> set[str]:
    return _imports(path.read_text(), path.relative_to(PACKAGE).parts[:-1])


def test_package_top_holds_only_entry_points_and_neutral_helpers() -> None:
    assert {p.name for p in PACKAGE.glob("*.py")} <= TOP_LEVEL


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_upward(path: Path) -> None:
    layer = _layer(path)
    if layer not in ALLOWED:  # the package top (__init__, __main__) and the neutral modules
        assert layer in {"__init__", "__main__"} | NEUTRAL
        return
    imported = _imported_layers(path) - NEUTRAL - {layer, "__version__"}
    upward = imported - ALLOWED[layer]
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(upward)}"


def test_neutral_modules_import_nothing_of_the_package() -> None:
    for name in NEUTRAL:
        assert not _imported_layers(PACKAGE / f"{name}.py") - NEUTRAL


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_and_modules_stay_short(path: Path) -> None:
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{node.name} has {length} lines"
    if str(path.relative_to(PACKAGE)) not in LONG_MODULES:
        assert len(source.splitlines()) <= 400


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "from ..engine import fit\n"  # relative, upward
        "def f():\n    import segnet.cli.args\n"  # absolute, lazy
        "from segnet.deploy.export import export_model\n"
        "from . import layers\n"
        "from .. import errors\n"
    )
    assert _imports(source, ("models",)) == {"engine", "cli", "deploy", "models", "errors"}
