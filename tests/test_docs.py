"""The docs describe the product as it is: every operator parameter documented, no history of the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from airflow_grid_resume.operators import GridRunOperator

ROOT = Path(__file__).parent.parent
# Sentences about the docs' own history or plans, not about the product.
HISTORY = re.compile(r"just arrived|being added|will describe|added (?:just|recently)|coming soon", re.IGNORECASE)


def test_every_operator_parameter_has_a_param_line() -> None:
    params = [p for p in inspect.signature(GridRunOperator.__init__).parameters if p not in ("self", "kwargs")]
    doc = GridRunOperator.__doc__ or ""
    assert [p for p in params if f":param {p}:" not in doc] == []
    assert [p for p in re.findall(r":param (\w+):", doc) if p not in params] == []


def test_docs_do_not_narrate_their_own_history() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []
