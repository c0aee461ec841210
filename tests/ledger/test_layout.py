"""ledger/layout.py: every key of the ledger in one place, and the docs that list them. Pure: no server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.ledger.errors import UnsupportedFormatError
from airflow_grid_resume.ledger.manifest import (
    FORMAT,
)


def test_docs_list_every_key_of_the_layout_and_its_writers() -> None:
    """docs/ledger.md is checked against the contract in code: every key, and "Airflow side" for keys
    only the Airflow side writes."""
    from pathlib import Path

    from airflow_grid_resume.ledger import layout

    docs = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    block = docs.split("```", 2)[1]
    lines = [line.strip() for line in block.splitlines()]
    for rule in layout.RULES:
        found = [line for line in lines if line.startswith(rule.key + " ")]
        assert found, f"docs/ledger.md does not list {rule.key}"
        assert ("Airflow side" in found[0]) == (rule.writers == ("airflow",)), found[0]
    assert layout.log_chunk(3, 42) == "sessions/000003/logs/0000000000000042.log"
    assert layout.manifest(1, 2) == "manifests/000001-000002.json"


def test_docs_ledger_table_is_the_rules_and_records_in_code() -> None:
    """docs/ledger.md's "Who writes what" table: one row per rule, its writers, its condition, and the
    record and format of every document that has one, exactly as ledger/layout.py and records.py say."""
    from pathlib import Path

    from airflow_grid_resume.ledger import layout, records

    docs = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    table = docs.split("## Who writes what, and how", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("key", "---"):
            rows[cells[0]] = cells[1:]
    assert list(rows) == [rule.key for rule in layout.RULES]
    writers = {("airflow",): "Airflow side", ("agent",): "agent", ("agent", "airflow"): "both"}
    by_key = {cls.KEY: (cls.__name__, cls.format()) for cls in records.ALL}
    by_key[layout.POINTER] = ("Pointer", f"{layout.POINTER_FORMAT_PREFIX}{layout.POINTER_FORMAT_VERSION}")
    by_key["manifests/SSSSSS-NNNNNN.json"] = ("Manifest", FORMAT)
    for rule in layout.RULES:
        written_by, how, record, fmt = rows[rule.key]
        assert (written_by, how) == (writers[rule.writers], rule.how), rule.key
        assert (record, fmt) == by_key.get(rule.key, ("-", fmt)), rule.key
        assert record == "-" or fmt.startswith("grid-resume-"), rule.key


def test_docs_ledger_lists_every_field_of_every_record() -> None:
    """Each record's bullet in docs/ledger.md ("- `outcome.json`: ...", "`lease.json` holds ...") names every
    one of its fields."""
    import dataclasses
    import re
    from pathlib import Path

    from airflow_grid_resume.ledger import records

    docs = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    bullets = re.findall(r"^(?:- )?`([\w.-]+\.json)`(?::| holds) (.*?)(?=^- |^\n|^## |\Z)", docs, re.M | re.S)
    by_name = {name: set(re.findall(r"`(\w+)`", text)) for name, text in bullets}
    for cls in records.ALL:
        name = cls.KEY.rsplit("/", 1)[-1]
        assert name in by_name, f"docs/ledger.md has no bullet for {name}"
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        assert fields <= by_name[name], f"{name}: docs/ledger.md does not name {sorted(fields - by_name[name])}"


def test_pointer_record_round_trip_and_refusal() -> None:
    from airflow_grid_resume.ledger.layout import Pointer

    p = Pointer("000002-000003.json", 2, 3, "t")
    assert Pointer.from_json(p.to_json()) == p
    assert Pointer.from_json(b"{nope") is None and Pointer.from_json(b'{"format": "x/1"}') is None
    with pytest.raises(UnsupportedFormatError):
        Pointer.from_json(b'{"format": "grid-resume-latest/2", "manifest": "000001-000001.json"}')


def test_no_ledger_key_is_spelled_outside_the_layout() -> None:
    """The package and the benchmarks build every key from ledger/layout.py (tests may spell them)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    package = root / "airflow_grid_resume"
    key = re.compile(
        r"""["']/?(?:(?:spec|final|lease|latest|session|heartbeat|outcome|launch-attempt|launch|watch|closed)\.json"""
        r"""|agent/grid-resume-agent\.pyz|manifests/|packs/|objects/sha256/?)["']"""
    )
    sources = [*package.rglob("*.py"), *(root / "benchmarks").glob("*.py")]
    offenders = sorted(
        rel
        for path in sources
        if (rel := str(path.relative_to(package if package in path.parents else root))) != "ledger/layout.py"
        and key.search(path.read_text())
    )
    assert not offenders, f"keys spelled outside ledger/layout.py: {offenders}"
