"""The direction of dependencies, checked on every import statement: agent -> ledger <- Airflow side.

- ``ledger/`` (the contract both sides share) imports only the standard library, boto3/botocore and itself.
- ``agent/``, and the package root it imports (all three ship in the zipapp), import only those, the package
  root and the agent's own modules.

So neither ever imports Airflow, aiobotocore or the Airflow side of this package, directly or through
another module: the agent ships as a zipapp that carries boto3 and runs on python3 alone. The rules are
folder allowlists, so a new module is covered without being named. ``make lint`` and ``make test`` run this;
it prints each offending import and exits 1.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "airflow_grid_resume"
AGENT = f"{PACKAGE}.agent"
LEDGER = f"{PACKAGE}.ledger"
THIRD_PARTY = {"boto3", "botocore"}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``; ``from P import m`` counts as ``P.m`` when m is a module."""
    found = []
    # Imports under ``if TYPE_CHECKING:`` never run: only the type checker reads them.
    checking_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in checking_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                as_path = root.joinpath(*sub.split("."))
                is_module = as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file()
                found.append((node.lineno, sub if is_module else base))
    return found


def allowed(importer: str, target: str) -> bool:
    top = target.split(".")[0]
    if top in sys.stdlib_module_names or top in THIRD_PARTY:
        return True
    if in_folder(importer, LEDGER):
        return in_folder(target, LEDGER)
    return target == PACKAGE or in_folder(target, AGENT) or in_folder(target, LEDGER)


def in_folder(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(root: Path) -> list[str]:
    out = []
    # The package root ships in the zipapp and every agent module imports it: the agent's rule holds there too.
    shipped = [*sorted((root / PACKAGE / "agent").rglob("*.py")), *sorted((root / PACKAGE / "ledger").rglob("*.py"))]
    for path in [root / PACKAGE / "__init__.py", *shipped]:
        if not path.is_file():
            continue
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported(tree, module, path.name == "__init__.py", root):
            if not allowed(module, target):
                rule = (
                    "the ledger imports only the standard library, boto3/botocore and the ledger's own modules"
                    if in_folder(module, LEDGER)
                    else "the agent imports only the standard library, boto3/botocore, the ledger and the agent's "
                    "own modules"
                )
                out.append(f"{path.relative_to(root)}:{line}: imports {target}: {rule}")
    return out


def main() -> int:
    found = violations(Path(__file__).resolve().parent.parent)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
