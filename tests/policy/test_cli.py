"""``grid-resume simulate`` as a user runs it: a real subprocess, its output lines and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def write_trace(directory: Path, name: str, data: list[int], gap: float = 3600.0) -> str:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return str(path)


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_grid_resume.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_json_lines_follow_the_contract(tmp_path: Path) -> None:
    trace = write_trace(tmp_path, "us-west-2a_v100_1", [1, 1, 0, 1, 1, 1, 0, 0])
    done = simulate(
        *("--trace", trace, "--work", "1.7", "--deadline", "10", "--changeover", "0.5"),
        *("--spot-price", "1", "--on-demand-price", "3", "--start", "0", "--start", "6"),
        *("--policy", "greedy", "--json"),
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    keys = ["start", "policy", "cost", "finish_hours", "deadline_met", "spot_hours", "on_demand_hours", "changeovers"]
    assert [list(line) for line in lines] == [keys, keys]
    # Worked by hand in tests/policy/test_simulate.py: preempted at tick 2, done 0.7 h into tick 3.
    assert lines[0] == {
        "start": 0,
        "policy": "greedy",
        "cost": 2.7,
        "finish_hours": 3.7,
        "deadline_met": True,
        "spot_hours": 2.7,
        "on_demand_hours": 0.0,
        "changeovers": 2,
    }
    # From tick 6 the trace ends after two idle ticks: no cost, no finish.
    assert (lines[1]["cost"], lines[1]["finish_hours"], lines[1]["deadline_met"]) == (None, None, False)


def test_pool_prices_and_the_readable_table(tmp_path: Path) -> None:
    a = write_trace(tmp_path, "a", [1, 1, 1, 1])
    b = write_trace(tmp_path, "b", [0, 0, 0, 0])
    done = simulate(
        *("--trace", b, "--trace", a, "--work", "2", "--deadline", "4", "--changeover", "0.5"),
        *("--spot-price", "a=0.5,b=0.25", "--on-demand-price", "3", "--start", "0"),
    )
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["start", "policy", "cost"]
    # Spot in a from tick 0: 2.5 h at 0.5.
    assert row.split()[:4] == ["0", "default", "1.25", "0.17"]
    assert "met" in row.split()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--deadline": "1"}, "--deadline 1 h is shorter than --work 2 h"),
        ({"--spot-price": "c=1"}, "no trace is named 'c'"),
        ({"--start": "99"}, "--start 99 is outside the traces"),
        ({"--policy": "cheapest"}, "invalid choice"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path: Path, change: dict[str, str], message: str) -> None:
    args = {
        "--trace": write_trace(tmp_path, "a", [1, 1, 1, 1]),
        "--work": "2",
        "--deadline": "3",
        "--changeover": "0.5",
        "--spot-price": "1",
        "--on-demand-price": "3",
        "--start": "0",
    }
    args.update(change)
    done = simulate(*[part for pair in args.items() for part in pair])
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_traces_with_different_ticks_are_refused(tmp_path: Path) -> None:
    a = write_trace(tmp_path, "a", [1, 1, 1, 1], gap=600)
    b = write_trace(tmp_path, "b", [1, 1, 1, 1], gap=3600)
    done = simulate(
        *("--trace", a, "--trace", b, "--work", "0.5", "--deadline", "1", "--changeover", "0.1"),
        *("--spot-price", "1", "--on-demand-price", "3", "--start", "0"),
    )
    assert done.returncode == 2
    assert "must share gap_seconds" in done.stderr and "a: 600 s" in done.stderr


def test_a_trace_that_is_not_json_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = simulate(
        *("--trace", str(broken), "--work", "1", "--deadline", "2", "--changeover", "0.1"),
        *("--spot-price", "1", "--on-demand-price", "3", "--start", "0"),
    )
    assert done.returncode == 2
    assert "broken.json: cannot read it as JSON" in done.stderr
