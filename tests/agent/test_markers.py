"""Point-in-time checkpoints: the ``grid-resume: checkpoint`` marker, its capture, syncs that never commit a
file they saw change, and restore preferring complete checkpoints (agent/markers.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from airflow_grid_resume.agent import sync as sync_module
from airflow_grid_resume.agent.markers import (
    UNSTABLE_SKIPS,
    Captures,
    exit_is_complete,
    replaced_after_marker,
    take_capture,
    unstable_action,
)
from airflow_grid_resume.agent.progress import ProgressTracker, is_checkpoint_line
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.scan import PathFilter
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.ledger.checkpoints import EXITED, MARKED, manifest_extra, restore_defers
from airflow_grid_resume.ledger.store import RunLedger
from tests.conftest import SCRIPTS, pids_in_group

PAIR = str(SCRIPTS / "pair_train.py")


# -- pure: the marker line and the decisions ---------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        "grid-resume: checkpoint",
        "grid-resume: checkpoint  \r\n",
        "INFO 12:00 [train] grid-resume: checkpoint",
        "[train] step 4 saved. grid-resume: checkpoint",
    ],
)
def test_checkpoint_marker_lines(line: str) -> None:
    assert is_checkpoint_line(line)


def steps(doc: dict | None) -> dict | None:
    """The steps of a progress report, without when they were read (epoch seconds, tested on their own)."""
    return None if doc is None else {k: v for k, v in doc.items() if not k.endswith("_at")}


@pytest.mark.parametrize(
    "line",
    [
        "grid-resume: checkpoints",
        "grid-resume: checkpoint saved",
        "xgrid-resume: checkpoint",
        "grid-resume: progress 3",
    ],
)
def test_not_checkpoint_marker_lines(line: str) -> None:
    assert not is_checkpoint_line(line)


def test_the_tracker_calls_back_once_per_read_and_keeps_progress() -> None:
    seen: list[int | None] = []
    tracker = ProgressTracker(on_checkpoint=seen.append)
    tracker.feed(b"grid-resume: progress 3/9\ngrid-resume: check", stream=1, written_by_ns=5)
    assert seen == []  # the line is not finished yet
    tracker.feed(b"point\n", stream=1, written_by_ns=7)
    assert seen == [7]
    tracker.feed(b"grid-resume: checkpoint\nx grid-resume: checkpoint\n", stream=2, written_by_ns=9)
    assert seen == [7, 9] and tracker.markers == 3  # two markers in one read: the files are captured once
    tracker.feed(b"grid-resume: checkpoint", stream=2)
    tracker.close()
    assert seen == [7, 9, None]
    assert steps(tracker.outcome()) == {"first": 3, "last": 3, "total": 9}


def test_decisions() -> None:
    assert manifest_extra(False, EXITED) == {}  # runs without markers are unchanged
    assert manifest_extra(True, MARKED) == {"markers": True, "checkpoint": "marker"}
    assert restore_defers({"markers": True}) and not restore_defers({"markers": True, "checkpoint": "exit"})
    assert not restore_defers({}) and not restore_defers({"checkpoint": "marker"})
    assert exit_is_complete("succeeded", 0, False) and exit_is_complete("interrupted", 0, False)
    assert not exit_is_complete("interrupted", 143, False) and not exit_is_complete("failed", 1, False)
    assert not exit_is_complete("interrupted", 0, True)
    assert unstable_action(MARKED, 99) == "skip" and unstable_action("final", 0) == "keep_previous"
    assert [unstable_action("periodic", n) for n in range(UNSTABLE_SKIPS + 1)][-2:] == ["skip", "keep_previous"]
    assert replaced_after_marker(1, 2, ctime_ns=11, written_by_ns=10)
    assert not replaced_after_marker(1, 2, ctime_ns=10, written_by_ns=10)  # not after: not known to be late
    assert not replaced_after_marker(2, 2, ctime_ns=99, written_by_ns=10)  # same inode: a log appended to
    assert not replaced_after_marker(None, 2, ctime_ns=99, written_by_ns=10)
    assert not replaced_after_marker(1, 2, ctime_ns=99, written_by_ns=None)


# -- the capture on a real filesystem -----------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_capture_keeps_the_set_the_marker_named(tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / "sub").mkdir(parents=True)
    _write(work / "a.json", "a1")
    _write(work / "sub" / "b.json", "b1")
    os.symlink("a.json", work / "link")
    capture = take_capture(str(work), 1, PathFilter(), written_by_ns=None, previous={})
    _write(work / "a.json", "a2")  # the script's next checkpoint, by rename
    root = Path(capture.root)
    assert (root / "a.json").read_text() == "a1" and (root / "sub" / "b.json").read_text() == "b1"
    assert os.readlink(root / "link") == "a.json"
    assert sorted(capture.files) == ["a.json", "sub/b.json"] and not capture.late
    assert root.is_relative_to(work) and PathFilter().excluded(str(root.relative_to(work)))


def test_a_capture_after_the_next_write_began_is_dropped(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    _write(work / "a.json", "a1")
    _write(work / "b.json", "b1")
    captures = Captures(str(work), PathFilter())
    marker_written = time.time_ns()
    time.sleep(0.02)
    _write(work / "a.json", "a2")  # replaced after the marker, before the capture
    assert captures.take(marker_written) is None and captures.dropped == 1 and not captures.pending()
    _write(work / "b.json", "b2")
    good = captures.take(time.time_ns())
    assert good is not None and captures.pending() and (Path(good.root) / "a.json").read_text() == "a2"


# -- syncs that see a file change while they read it ---------------------------------------------------
def _pair(root: Path) -> tuple[int | None, int | None]:
    def step(name: str) -> int | None:
        path = root / name
        return json.loads(path.read_text())["step"] if path.exists() else None

    return step("a.json"), step("b.json")


def _rewrite_during_first_reads(monkeypatch, target: Path, times: int) -> list[int]:
    """Rewrite ``target`` in place (same bytes, new mtime) between the sync's stat and its read, ``times``
    times: a writer that keeps going while the agent reads."""
    original = sync_module._check_same
    done = [0]

    def check(rel, before, after):
        original(rel, before, after)
        if rel == target.name and done[0] < times and before is not after:
            done[0] += 1
            data = target.read_bytes()
            with open(target, "r+b") as fh:
                fh.write(data)
            os.utime(target, ns=(time.time_ns(), time.time_ns() + 1000 * done[0]))

    monkeypatch.setattr(sync_module, "_check_same", check)
    return done


def test_a_file_changing_while_read_is_read_again_not_committed_torn(
    ledger: RunLedger, tmp_path: Path, monkeypatch
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    _write(work / "a.json", json.dumps({"step": 1}))
    _write(work / "b.json", json.dumps({"step": 1}))
    syncer = Syncer(ledger, str(work), session=1)
    assert syncer.sync("periodic").committed
    _write(work / "a.json", json.dumps({"step": 2}))
    _write(work / "b.json", json.dumps({"step": 2}))
    done = _rewrite_during_first_reads(monkeypatch, work / "a.json", times=1)
    result = syncer.sync("periodic")
    assert done[0] == 1 and result.committed
    restored = tmp_path / "r"
    Restorer(ledger, str(restored)).restore()
    assert _pair(restored) == (2, 2)


def test_a_file_that_never_reads_stably_commits_nothing(ledger: RunLedger, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "w"
    work.mkdir()
    _write(work / "a.json", json.dumps({"step": 1}))
    _write(work / "b.json", json.dumps({"step": 1}))
    syncer = Syncer(ledger, str(work), session=1)
    assert syncer.sync("periodic").committed
    _write(work / "a.json", json.dumps({"step": 2}))
    _write(work / "b.json", json.dumps({"step": 2}))
    _rewrite_during_first_reads(monkeypatch, work / "a.json", times=1000)
    for _ in range(UNSTABLE_SKIPS):
        result = syncer.sync("periodic")
        assert not result.committed and result.unstable == ["a.json"]
        restored = tmp_path / f"r{_}"
        Restorer(ledger, str(restored)).restore()
        assert _pair(restored) == (1, 1)
    # A file that never holds still cannot stop every checkpoint: then it keeps its previous version.
    assert syncer.sync("periodic").committed


# -- restore prefers complete checkpoints ------------------------------------------------------------
def test_restore_prefers_the_newest_complete_checkpoint_of_a_marker_run(ledger: RunLedger, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    syncer = Syncer(ledger, str(work), session=1)
    _write(work / "a.json", json.dumps({"step": 1}))
    _write(work / "b.json", json.dumps({"step": 1}))
    assert syncer.sync(MARKED, extra=manifest_extra(True, MARKED)).committed
    _write(work / "a.json", json.dumps({"step": 2}))  # b.json not yet: a torn set
    torn = syncer.sync("final", extra=manifest_extra(True, None))
    assert torn.committed
    restored = tmp_path / "r"
    result = Restorer(ledger, str(restored)).restore()
    assert _pair(restored) == (1, 1) and result.manifest is not None and result.manifest.seq == 1


# -- through the real agent: a two-file checkpoint under repeated hard losses ------------------------
def _kill_all(agent_proc, pidfile: Path) -> None:
    """The instance vanishes: agent and command SIGKILLed, no handler runs."""
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    agent_proc.proc.send_signal(signal.SIGKILL)
    if pid is not None:
        for p in pids_in_group(pid):
            os.kill(p, signal.SIGKILL)
    agent_proc.wait()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [11, 12])
def test_marked_two_file_checkpoints_survive_hard_losses(
    agent, run_uri: str, ledger: RunLedger, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    pidfile = tmp_path / "pid"
    options = ["--sync-interval", "0.15", "--lease-ttl", "2", "--sync-reserve", "1", "--min-grace", "1"]
    restored_steps = []
    for round_ in range(5):
        pidfile.unlink(missing_ok=True)
        work = tmp_path / f"session{round_}"
        proc = agent(
            run_uri,
            work,
            sys.executable,
            PAIR,
            "1000",
            "0.3",
            "--marker",
            options=options,
            env={"PAIR_PIDFILE": str(pidfile)},
        )
        deadline = time.monotonic() + 60
        while not pidfile.exists() and proc.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.6, 2.2))
        assert proc.proc.poll() is None, f"the session ended early:\n{proc.stdout}\n{proc.stderr}"
        _kill_all(proc, pidfile)
        assert "TORN" not in proc.stdout, proc.stdout
        restored = tmp_path / f"restored{round_}"
        Restorer(ledger, str(restored)).restore()
        a, b = _pair(restored)
        assert a == b, f"round {round_}: restored a torn checkpoint a={a} b={b}"
        restored_steps.append(a or 0)
        time.sleep(2.1)  # the dead agent's lease expires
    assert restored_steps[-1] > 0 and restored_steps == sorted(restored_steps), restored_steps


# -- grid-resume verify: the marker honoured ---------------------------------------------------------
def test_verify_checks_that_markers_were_honoured() -> None:
    from airflow_grid_resume.ledger.records import Outcome
    from airflow_grid_resume.verify.records import SessionRecord
    from airflow_grid_resume.verify.runner import DROPPED_CAPTURE
    from airflow_grid_resume.verify.verdict import check_markers

    def session(label: str, markers: int, restored: str | None, dropped: int = 0) -> SessionRecord:
        outcome = Outcome(session=1, status="interrupted", restored_from=restored)
        return SessionRecord(label, markers=markers, markers_dropped=dropped, outcome=outcome)

    marked, exited, unmarked = (
        {"markers": True, "checkpoint": "marker"},
        {"markers": True, "checkpoint": "exit"},
        {"markers": True},
    )
    assert check_markers([session("s1", 0, None)], {}) is None  # no marker printed: no check
    good = check_markers([session("s1", 3, "000000-000001.json"), session("s2", 2, "000001-000002.json")],
                         {"000001-000001.json": marked, "000001-000002.json": exited})  # fmt: skip
    assert good is not None and good.status == "PASS" and "5 markers printed, 1 marked" in good.summary
    torn = check_markers([session("s2", 2, "000001-000003.json")], {"000001-000003.json": unmarked})
    assert torn is not None and torn.status == "FAIL" and "000001-000003.json" in torn.details[0]
    only_at_exit = check_markers([session("s1", 1, None)], {"000001-000001.json": exited})  # the SIGTERM save's
    assert only_at_exit is not None and only_at_exit.status == "PASS"
    dropped = check_markers([session("s1", 2, None, dropped=1)], {"000001-000001.json": exited})
    assert dropped is not None and dropped.status == "WARN" and "1 capture(s)" in dropped.summary
    assert DROPPED_CAPTURE.search("[grid-resume] 2026 WARNING checkpoint marker 3: not used: a.json replaced after")


def test_a_capture_written_in_place_afterwards_is_not_committed(ledger: RunLedger, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    _write(work / "a.json", json.dumps({"step": 1}))
    _write(work / "b.json", json.dumps({"step": 1}))
    captures = Captures(str(work), PathFilter())
    capture = captures.take(time.time_ns())
    assert capture is not None
    time.sleep(0.01)
    with open(work / "b.json", "r+") as fh:  # in place: the capture's link sees it
        fh.write(json.dumps({"step": 2}))
    syncer = Syncer(ledger, str(work), session=1)
    result = syncer.sync(MARKED, root=capture.root, extra=manifest_extra(True, MARKED), expected=capture.files)
    assert not result.committed and result.unstable == ["b.json"]
    assert ledger.list_manifests() == []


def test_a_marker_run_commits_only_complete_checkpoints(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    proc = agent(
        run_uri, tmp_path / "w", sys.executable, PAIR, "6", "0.2", "--marker", options=["--sync-interval", "0.1"]
    )
    assert proc.wait() == 0, proc.stderr
    manifests = sorted((ledger.read_manifest(m) for m in ledger.list_manifests()), key=lambda m: m.name)
    kinds = [m.extra.get("checkpoint") for m in manifests]
    # Periodic syncs of the live workdir stopped at the first marker (printed at the start; a periodic sync
    # before it, of the script alone, has no marks): from there every manifest is a capture at a marker, and
    # the final sync after exit 0 is complete too (or the same as the last capture).
    first = kinds.index("marker")
    assert all("markers" not in m.extra for m in manifests[:first]) and first <= 1, kinds
    assert set(kinds[first:]) <= {"marker", "exit"} and all(m.extra["markers"] for m in manifests[first:]), kinds
    assert len(kinds) - first >= 4, kinds  # most of the 6 steps' markers were captured and committed
    assert "checkpoint marker" in proc.stderr and "captured" in proc.stderr
    restored = tmp_path / "r"
    Restorer(ledger, str(restored)).restore()
    assert _pair(restored) == (6, 6)
    assert not list((tmp_path / "w").glob(".grid-resume-tmp*"))  # the captures are gone
