"""The package's layering is kept by this check, not by memory (docs/ARCHITECTURE.md).

Imports point down only: faces → node → net, storage → formats → errors and
``_native``. A module may import from its own package or from a lower layer;
``net`` and ``storage`` share a layer and know nothing of each other. Every
import counts, including those inside functions and ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "fstore"

LAYERS = {
    "fstore.errors": 0,
    "fstore._native": 0,
    "fstore.formats": 1,
    "fstore.storage": 2,
    "fstore.net": 2,
    "fstore.node": 3,
    "fstore.faces": 4,
    "fstore.sim": 4,
}
# Attributes of the package root that stand for a module of a layer.
ROOT_NAMES = {"__version__": "fstore._native", "Node": "fstore.node"}


def unit_of(module: str) -> str:
    """The layer unit (a key of LAYERS) a dotted module name belongs to."""
    for unit in LAYERS:
        if module == unit or module.startswith(unit + "."):
            return unit
    raise KeyError(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def imported_modules(source: str, module: str) -> list[str]:
    """Every fstore module ``source`` (the text of ``module``) imports."""
    found = []
    package = module if module.endswith("__init__") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "fstore"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.removesuffix(".__init__").split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base == "fstore":
                found += [ROOT_NAMES.get(a.name, f"fstore.{a.name}") for a in node.names]
            elif base.startswith("fstore."):
                found.append(base)
    return found


def violations(modules: dict[str, str]) -> list[str]:
    """``importer imports imported`` for every import that points up or sideways."""
    bad = []
    for module, source in sorted(modules.items()):
        if module == "fstore.__init__":
            continue  # the root re-exports the public API from the top
        own = unit_of(module)
        for target in imported_modules(source, module):
            other = unit_of(target)
            if other != own and LAYERS[other] >= LAYERS[own]:
                bad.append(f"{module} imports {target} (layer {other} is not below {own})")
    return bad


def package_modules() -> dict[str, str]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[dotted] = path.read_text(encoding="utf-8")
    return modules


def test_every_import_points_down() -> None:
    assert violations(package_modules()) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("fstore.net.link", "from fstore.node.node import Node\n"),
        ("fstore.storage.blobs", "import fstore.net.wire\n"),
        ("fstore.formats.manifest", "def f():\n    from fstore.storage import catalog\n"),
        ("fstore.node.reader", "from fstore import faces\n"),
        ("fstore.node.writer", "from ..faces import http\n"),
        ("fstore.net.trust", "from fstore import Node\n"),
    ],
)
def test_an_upward_or_sideways_import_is_caught(module: str, source: str) -> None:
    assert len(violations({module: source})) == 1


def test_every_package_says_what_it_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "May import" in doc, f"{init.parent.name}/__init__.py needs a docstring"


def test_nothing_reads_outside_the_clone() -> None:
    """A user's clone has nothing beside it: no file of the project reaches out of it."""
    outside = re.compile(r"\.\./shared|parents\[\d+\]\.parent")
    checked = [*ROOT.glob("*.toml"), *(ROOT / ".ci").iterdir(), *(ROOT / "scripts").iterdir()]
    for folder in ("python", "tests", "benches"):
        checked += (ROOT / folder).rglob("*.py")
    hits = [
        str(path.relative_to(ROOT))
        for path in checked
        if path.is_file() and path != Path(__file__) and outside.search(path.read_text("utf-8"))
    ]
    assert hits == []
