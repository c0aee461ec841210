"""docs/architecture.md holds the house as it is: its list of arrows between the package's folders and top-level
modules is the one the code's imports make, and they run one way (no circle between folders). Pure: no server."""

from __future__ import annotations

import ast
import importlib.util
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_grid_resume"
_spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
check_imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_imports)  # type: ignore[union-attr]  # a spec from a file always has a loader


def room(module: str) -> str | None:
    """The folder or top-level module of the package that ``module`` belongs to (None: outside it, or its root)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def arrows_in_code() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        module = check_imports.module_name(path, ROOT)
        source = room(module)
        if source is None:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for _, target in check_imports.imported(tree, module, path.name == "__init__.py", ROOT):
            destination = room(target)
            if destination and destination != source:
                found.setdefault(source, set()).add(destination)
    return found


def arrows_in_docs() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- arrows: begin -->\n(.*?)<!-- arrows: end -->", text, re.S)
    assert block, "docs/architecture.md lost its list of arrows"
    listed: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        source, _, targets = line.removeprefix("- ").partition(" -> ")
        listed[source.strip()] = {t.strip() for t in targets.split(",")}
    return listed


def test_the_documented_arrows_are_the_codes() -> None:
    assert arrows_in_docs() == arrows_in_code()


def test_the_arrows_run_one_way() -> None:
    try:
        list(TopologicalSorter(arrows_in_code()).static_order())
    except CycleError as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"folders import each other: {exc.args[1]}") from exc
