"""scripts/check_imports.py, the dependency direction `make lint` and `make test` enforce: it finds every way
an agent or ledger module can reach past its allowlist, and passes the project's own tree. Pure: no server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
check_imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_imports)  # type: ignore[union-attr]


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_projects_agent_and_ledger_keep_the_direction() -> None:
    assert check_imports.violations(ROOT) == []


def test_every_way_past_the_allowlists_is_found(tmp_path: Path) -> None:
    for package in ("", "agent/", "agent/monitors/", "ledger/"):
        write(tmp_path, f"airflow_grid_resume/{package}__init__.py", "")
    for name in ("summary", "logtext", "ledger/layout", "agent/supervisor"):
        write(tmp_path, f"airflow_grid_resume/{name}.py", "")
    write(
        tmp_path,
        "airflow_grid_resume/agent/child.py",
        "import json, boto3\nfrom botocore.config import Config\nfrom airflow_grid_resume import __version__\n"
        "from ..ledger import layout\nfrom .supervisor import x\n"  # all allowed
        "import airflow.models\nfrom airflow_grid_resume import logtext\nfrom .. import summary\n"
        "def f():\n    import aiobotocore\n",
    )
    write(
        tmp_path,
        "airflow_grid_resume/agent/monitors/spot.py",
        "from ...summary import x\nfrom ...ledger import layout\n",
    )
    write(tmp_path, "airflow_grid_resume/ledger/records.py", "from . import layout\nfrom ..agent import supervisor\n")
    found = check_imports.violations(tmp_path)
    assert [line.split(": imports ")[0] + " " + line.split(": imports ")[1].split(":")[0] for line in found] == [
        "airflow_grid_resume/agent/child.py:6 airflow.models",
        "airflow_grid_resume/agent/child.py:7 airflow_grid_resume.logtext",
        "airflow_grid_resume/agent/child.py:8 airflow_grid_resume.summary",
        "airflow_grid_resume/agent/child.py:10 aiobotocore",
        "airflow_grid_resume/agent/monitors/spot.py:1 airflow_grid_resume.summary",
        "airflow_grid_resume/ledger/records.py:2 airflow_grid_resume.agent.supervisor",
    ]
    assert "the ledger imports only" in found[-1] and "the agent imports only" in found[0]


def test_the_package_root_the_agent_imports_is_checked_too(tmp_path: Path) -> None:
    """Every agent module imports ``airflow_grid_resume`` (its ``__version__``), and the zipapp ships the
    root ``__init__.py``: a convenience import of the Airflow side there would break the agent as surely
    as one in the agent."""
    write(tmp_path, "airflow_grid_resume/__init__.py", "from airflow_grid_resume.operators import GridRunOperator\n")
    write(tmp_path, "airflow_grid_resume/operators.py", "")
    write(tmp_path, "airflow_grid_resume/agent/__init__.py", "")
    found = check_imports.violations(tmp_path)
    assert [line.split(": imports ")[0] for line in found] == ["airflow_grid_resume/__init__.py:1"], found
