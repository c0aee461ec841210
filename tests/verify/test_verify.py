"""``grid-resume verify``: the pure decisions (no server), then real agents on a local moto S3 against
a good script and five bad ones, and the command itself as a subprocess."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from airflow_grid_resume.emulator.moto_server import MotoServer
from airflow_grid_resume.ledger.manifest import FileEntry, Manifest
from airflow_grid_resume.ledger.records import Outcome
from airflow_grid_resume.verify.chaos import (
    EARLY,
    next_offset,
    plan_points,
    progress_span,
    progress_target,
    startup_seconds,
)
from airflow_grid_resume.verify.churn import analyse, snapshot, suggest_excludes
from airflow_grid_resume.verify.cli import judge
from airflow_grid_resume.verify.compare import (
    BYTES,
    COMMAND,
    TORCH,
    Comparison,
    bytes_verdict,
    check_key,
    command_verdict,
    compare_trees,
    comparison_for,
    tree_verdict,
    user_rule,
)
from airflow_grid_resume.verify.contents import run_command
from airflow_grid_resume.verify.outputs import OutputDiff, diff_outputs, file_hashes
from airflow_grid_resume.verify.probe import USER_TMPDIR, command_env
from airflow_grid_resume.verify.records import SessionRecord, progress_reader
from airflow_grid_resume.verify.report import render
from airflow_grid_resume.verify.runner import Verifier, VerifyConfig
from airflow_grid_resume.verify.verdict import (
    EXIT_INCONCLUSIVE,
    EXIT_NOT_RESUMABLE,
    EXIT_RESUMABLE,
    FAIL,
    NOTE,
    PASS,
    SKIP,
    WARN,
    Verdict,
    Window,
    decide,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "verify"
WINDOW = Window(notice_seconds=2.0, allowed_seconds=1.5)
H = {c: c * 64 for c in "abcdef"}  # fake sha256s


# -- chaos points ----------------------------------------------------------------------------------
def test_points_are_reproducible_early_first_and_inside_the_work() -> None:
    assert plan_points(7, 3, 10.0) == plan_points(7, 3, 10.0)
    assert plan_points(7, 3, 10.0) != plan_points(8, 3, 10.0)
    for seed in range(50):
        points = plan_points(seed, 4, 10.0)
        assert len(points) == 4 and points == sorted(points)
        assert EARLY[0] * 10 <= points[0] <= EARLY[1] * 10  # an early one, where a first checkpoint write may be
        assert points[1] >= 3.0 and points[-1] <= 9.0
        assert all(b > a for a, b in pairwise(points))
    assert 3.0 <= plan_points(1, 1, 10.0)[0] <= 7.0
    assert plan_points(1, 0, 10.0) == [] and plan_points(1, 3, 0.0) == []


def test_the_command_gets_the_users_tmpdir_back() -> None:
    agent_env = {"TMPDIR": "/tmp/grid-resume-verify-x/tmp", USER_TMPDIR: "/home/me/tmp", "PATH": "/bin"}
    assert command_env(agent_env) == {"TMPDIR": "/home/me/tmp", "PATH": "/bin"}
    assert command_env({"TMPDIR": "/tmp/grid-resume-verify-x/tmp", USER_TMPDIR: ""}) == {}  # none was set
    assert command_env({"TMPDIR": "/x"}) == {"TMPDIR": "/x"}  # not under verify: unchanged


def test_progress_targets_move_forward_and_stay_inside_the_run() -> None:
    assert progress_span(SessionRecord("r", progress=[(0, 1), (1, 2), (2, 3), (3, 100)])) == (1, 100)
    assert progress_span(SessionRecord("r", progress=[(0, 5), (1, 5)])) is None  # nothing to aim at
    assert progress_target(0.3, (1, 101), None) == 31
    assert progress_target(0.3, (1, 101), reached=60) == 63  # past what the previous session reached
    assert progress_target(0.99, (1, 101), None) == 100 and progress_target(0.0, (1, 101), None) == 2
    # A notice takes a moment to reach the command: the target keeps that many steps before the end if it can,
    # and still comes after what the previous session reached.
    assert progress_target(0.7, (1, 101), None, margin_steps=49.5) == 51
    assert progress_target(0.5, (1, 301), None, margin_steps=577) == 2  # a run shorter than the margin: early
    assert progress_target(0.5, (1, 101), reached=90, margin_steps=50) == 91


def test_offsets_follow_the_work_actually_done() -> None:
    # The previous SIGTERM landed late (work done 2.5 instead of 2.0): the next point stays at 5.0.
    assert next_offset(5.0, 2.5, 0.5, 0.1) == pytest.approx(3.0)
    assert next_offset(5.0, 4.99, 0.5, 0.2) == pytest.approx(0.7)  # never less than the minimum work
    # Late in a 6 s run: posted early enough that a resuming script is not done before the agent sees it.
    assert next_offset(5.5, 3.0, 0.5, 0.1, work=6.0, latency=0.2) == pytest.approx(0.5 + 2.5)
    assert next_offset(5.9, 5.0, 0.5, 0.1, work=6.0, latency=0.2) == pytest.approx(0.5 + 0.7)
    assert startup_seconds(0.3, 10.0) == 0.3
    assert startup_seconds(6.0, 10.0) == 6.0  # torch imports can take half a small run
    assert startup_seconds(8.0, 10.0) == 0.0  # first output this late says nothing about start-up
    assert startup_seconds(None, 10.0) == 0.0


def test_progress_protocol_and_custom_regex() -> None:
    default = progress_reader(None)
    assert default("grid-resume: progress 42/100") == 42
    assert default("INFO grid-resume: progress 7") == 7
    assert default("grid-resume-progress 42") is None and default("step 42") is None
    custom = progress_reader(r"^step (\d+)")
    assert custom("step 7") == 7
    assert custom("resumed at step 7") is None


# -- outputs and churn -----------------------------------------------------------------------------
def test_outputs_name_what_differs_is_missing_or_extra() -> None:
    reference = {"result.txt": H["a"], "out/model.bin": H["b"], "out/metrics.json": H["c"], "ckpt.json": H["d"]}
    run = {"result.txt": H["a"], "out/model.bin": H["e"], "out/extra.txt": H["f"], "ckpt.json": H["e"]}
    diff = diff_outputs(reference, run, ["result.txt", "out"])
    assert diff.same == ["result.txt"] and diff.differ == ["out/model.bin"]
    assert diff.missing == ["out/metrics.json"] and diff.extra == ["out/extra.txt"]
    assert not diff.matches  # ckpt.json differs too, but it is not an output
    assert diff_outputs(reference, run, ["result.txt"]).matches
    assert diff_outputs(reference, run, []).compared == 0


def _manifest(seq: int, files: dict[str, tuple[int, str]]) -> Manifest:
    entries = tuple(FileEntry(p, size, 0o644, 0, sha) for p, (size, sha) in sorted(files.items()))
    return Manifest(session=seq, seq=1, created_at="", reason="final", files=entries)


def test_churn_finds_large_and_every_sync_changes_and_suggests_excludes() -> None:
    mib = 1024 * 1024
    syncs = [
        {"ckpt.pt": (5 * mib, H["a"]), "data.bin": (300 * mib, H["b"]), "logs/a.ev": (2 * mib, H["a"])},
        {"ckpt.pt": (5 * mib, H["c"]), "data.bin": (300 * mib, H["b"]), "logs/a.ev": (2 * mib, H["b"])},
        {
            "ckpt.pt": (5 * mib, H["d"]),
            "data.bin": (300 * mib, H["b"]),
            "logs/a.ev": (3 * mib, H["c"]),
            "logs/b.ev": (mib, H["d"]),
        },
    ]
    report = analyse([snapshot(_manifest(i + 1, s)) for i, s in enumerate(syncs)], large_bytes=100 * mib)
    assert report.syncs == 3
    assert [f.path for f in report.large] == ["data.bin"]
    assert {f.path for f in report.churning} == {"ckpt.pt", "logs/a.ev"}  # logs/b.ev is in one sync only
    assert report.findings[0].path == "ckpt.pt" and report.findings[0].bytes_reuploaded == 10 * mib
    assert suggest_excludes(report.findings) == ["ckpt.pt", "logs/a.ev", "data.bin"]
    two_logs = [f for f in report.findings if f.path.startswith("logs")]
    two_logs.append(type(two_logs[0])("logs/c.ev", 1, 2, 1, False, True))
    assert suggest_excludes(two_logs) == ["logs"]
    check = decide(*_good(), **_kwargs(churn=report)).check("sync")
    assert check is not None and check.status == NOTE and "--exclude 'data.bin'" in check.summary


# -- the verdict from records ---------------------------------------------------------------------
def _record(label: str, start: float, **kw) -> SessionRecord:
    status = kw.pop("status", "succeeded")
    outcome = {"status": status, "manifest": kw.pop("manifest", None), "restored_from": kw.pop("restored", None)}
    outcome.update(kw.pop("outcome", {}))
    return SessionRecord(label, session=1, outcome=Outcome(session=1, **outcome), started_at=start, **kw)


def _steps(start: float, first: int, last: int, rate: float = 10.0) -> list[tuple[float, float]]:
    return [(start + 0.1 + (s - first) / rate, float(s)) for s in range(first, last + 1)]


def _good() -> tuple[SessionRecord, list[SessionRecord]]:
    """Reference: 30 steps in 3 s. Two interruptions at steps 5 and 18; resumed each time."""
    reference = _record("reference", 0.0, exited_at=3.1, returncode=0, progress=_steps(0, 1, 30))
    chain = [
        _record("session 1", 10, status="interrupted", sigterm_at=10.6, exited_at=10.62, returncode=0,
                progress=_steps(10, 1, 5), manifest="000001-000001.json"),
        _record("session 2", 20, status="interrupted", sigterm_at=21.4, exited_at=21.45, returncode=0,
                progress=_steps(20, 6, 18), manifest="000002-000001.json", restored="000001-000001.json"),
        _record("session 3", 30, exited_at=31.3, returncode=0, progress=_steps(30, 19, 30),
                restored="000002-000001.json"),
    ]  # fmt: skip
    return reference, chain


def _kwargs(**kw) -> dict:
    base = {"window": WINDOW, "startup": 0.1, "outputs": None, "output_globs": (), "churn": None, "large_bytes": 1}
    return {**base, **kw}


def test_good_records_are_resumable() -> None:
    verdict = decide(*_good(), **_kwargs())
    assert verdict.exit_code == EXIT_RESUMABLE and verdict.resumable, verdict
    assert [c.status for c in verdict.checks[:2]] == [PASS, PASS]
    resume = verdict.check("resume")
    assert resume is not None and "at most 0 steps redone" in resume.summary


def test_killed_at_deadline_fails_sigterm() -> None:
    reference, chain = _good()
    chain[0].exited_at, chain[0].returncode = None, None  # the probe died with the command: SIGKILL
    verdict = decide(reference, chain, **_kwargs())
    assert verdict.exit_code == EXIT_NOT_RESUMABLE
    check = verdict.check("sigterm")
    assert check is not None and check.status == FAIL and "ignores SIGTERM" in check.summary


def test_went_on_to_the_end_after_sigterm_fails_by_progress() -> None:
    reference, chain = _good()
    # session 1 got SIGTERM at step 5 and went on to step 30, then exited 0: it simply finished (steps printed
    # within 0.25 s of the SIGTERM may have been done before it: output reaches verify a little late)
    chain[0].progress, chain[0].exited_at = _steps(10, 1, 30), 13.1
    check = decide(reference, chain, **_kwargs()).check("sigterm")
    assert check is not None and check.status == FAIL, check
    assert "went on to step 30, the end of the run, after SIGTERM (progress at SIGTERM: 8)" in check.summary


def test_a_sigterm_after_the_last_step_is_not_held_against_the_script() -> None:
    reference, chain = _good()
    chain[1].progress, chain[1].returncode = _steps(20, 6, 30), 143  # done at 22.5 s; SIGTERM at 23 s, exiting
    chain[1].sigterm_at, chain[1].exited_at = 23.0, 23.05
    check = decide(reference, chain, **_kwargs()).check("sigterm")
    assert check is not None and check.status == PASS and "while it was exiting" in " ".join(check.details)
    chain[1].progress = _steps(20, 6, 18)  # not done: dying of SIGTERM is a failure
    assert decide(reference, chain, **_kwargs()).check("sigterm").status == FAIL


def test_an_interruption_that_came_only_after_the_last_step_tested_nothing() -> None:
    reference = _good()[0]
    # One interruption, planned mid-run; on a loaded machine its SIGTERM came after the script's last step.
    late = _record("session 1", 10, status="interrupted", sigterm_at=13.5, exited_at=13.55, returncode=143,
                   progress=_steps(10, 1, 30), manifest="000001-000001.json")  # fmt: skip
    final = _record("session 2", 20, exited_at=23.1, returncode=0, progress=_steps(20, 1, 30))
    verdict = decide(reference, [late, final], **_kwargs())
    assert verdict.exit_code == EXIT_INCONCLUSIVE and not verdict.resumable, verdict
    assert verdict.headline == "INCONCLUSIVE: the interruption came after the last step"
    check = verdict.check("sigterm")
    assert check is not None and check.status == SKIP
    assert check.summary.startswith("interruption landed after the script finished; nothing was tested")
    assert verdict.check("resume") is None  # no "starts over" verdict from a session that had simply finished


def test_the_step_under_way_may_finish_after_sigterm() -> None:
    reference, chain = _good()
    chain[0].progress = _steps(10, 1, 6)  # step 6 completes 0.1 s after the SIGTERM, then it saves and exits
    chain[0].exited_at = 10.75
    assert decide(reference, chain, **_kwargs()).check("sigterm").status == PASS


def test_went_on_working_after_sigterm_fails_by_time_without_progress() -> None:
    reference, chain = _good()
    for record in (reference, *chain):
        record.progress = []
    chain[0].work_left, chain[0].exited_at = 2.4, 10.6 + 2.3  # exited when about all the work left was done
    chain[1].work_left = 1.5
    check = decide(reference, chain, **_kwargs()).check("sigterm")
    assert check is not None and check.status == FAIL and "went on working until it finished" in check.summary
    chain[0].exited_at = 10.65  # a prompt exit instead
    assert decide(reference, chain, **_kwargs()).check("sigterm").status == PASS
    chain[0].exited_at, chain[2].exited_at = 10.6 + 1.0, 30.3  # exited sooner, but left nothing to the next one
    chain[1].sigterm_at = None  # (a chain with one interruption)
    check = decide(reference, [chain[0], chain[2]], **_kwargs()).check("sigterm")
    assert check is not None and check.status == FAIL and "the next session had only" in check.summary


def test_too_short_to_tell_an_ignorer_is_inconclusive() -> None:
    reference, chain = _good()
    for record in (reference, *chain):
        record.progress = []
    chain[0].work_left = chain[1].work_left = 0.3  # less left than a save and exit may take
    verdict = decide(reference, chain, **_kwargs())
    assert verdict.exit_code == EXIT_INCONCLUSIVE and "too short to tell" in verdict.headline
    assert verdict.check("sigterm").status == SKIP


def test_exit_143_fails_sigterm_and_slow_exit_warns() -> None:
    reference, chain = _good()
    chain[1].returncode = 143
    check = decide(reference, chain, **_kwargs()).check("sigterm")
    assert check is not None and check.status == FAIL and "exit 143" in check.summary
    reference, chain = _good()
    chain[1].exited_at = 21.4 + 1.2  # 1.2 s of the 1.5 s allowed
    verdict = decide(reference, chain, **_kwargs())
    assert verdict.check("sigterm").status == WARN and verdict.exit_code == EXIT_RESUMABLE  # type: ignore[union-attr]


def test_a_pipe_that_broke_the_save_fails_with_its_cause_named() -> None:
    command = ("bash", "-c", "python train.py 2>&1 | tee train.log")
    reference, chain = _good()
    chain[0].tail = ["step 5", "Traceback (most recent call last):", "BrokenPipeError: [Errno 32] Broken pipe"]
    verdict = decide(reference, chain, **_kwargs(), command=command)
    check = verdict.check("pipe")
    assert verdict.exit_code == EXIT_NOT_RESUMABLE and check is not None and check.status == FAIL
    assert check.summary.startswith(
        "the command's output goes through a pipe (| tee): when the group gets SIGTERM, tee exits and the "
        "trainer's next print gets SIGPIPE"
    )
    assert "write it to a file" in check.fix and verdict.headline.startswith("NOT RESUMABLE (pipe")
    # the same pipe that did no harm (nothing printed while saving) is only a warning
    verdict = decide(*_good(), **_kwargs(), command=command)
    assert verdict.exit_code == EXIT_RESUMABLE and verdict.check("pipe").status == WARN  # type: ignore[union-attr]
    # no pipe, or none into a logging program: nothing to say
    for harmless in (("bash", "-c", "python train.py || echo failed"), ("bash", "-c", "cat l | python t.py")):
        assert decide(*_good(), **_kwargs(), command=harmless).check("pipe") is None


def test_crash_after_resume_names_a_truncated_checkpoint() -> None:
    reference, chain = _good()
    tail = ["Traceback (most recent call last):", "json.decoder.JSONDecodeError: Unterminated string", "[grid-resume]"]
    chain[1] = _record("session 2", 20, status="failed", exited_at=20.2, returncode=1,
                       outcome={"exit_code": 1, "tail": tail}, restored="000001-000001.json")  # fmt: skip
    verdict = decide(reference, chain[:2], **_kwargs())
    check = verdict.check("resume")
    assert verdict.exit_code == EXIT_NOT_RESUMABLE and check is not None and check.status == FAIL
    assert "crashes after resuming" in check.summary and "interrupted mid-write" in check.summary
    assert "JSONDecodeError" in check.summary and "os.replace" in check.fix
    assert not any("[grid-resume]" in d for d in check.details)


def test_start_over_by_progress_numbers() -> None:
    reference, chain = _good()
    chain[1].progress = _steps(20, 1, 14)  # began again at step 1
    check = decide(reference, chain, **_kwargs()).check("resume")
    assert check is not None and check.status == FAIL and "starts over" in check.summary
    assert "after interruption 1 " in check.summary


def test_start_over_by_wall_time_when_there_are_no_progress_numbers() -> None:
    reference, chain = _good()
    for record in (reference, *chain):
        record.progress = []
    assert decide(reference, chain, **_kwargs()).check("resume").status == PASS  # type: ignore[union-attr]
    chain[-1].exited_at = 30 + 3.0  # the final session needed the whole reference's time again
    check = decide(reference, chain, **_kwargs()).check("resume")
    assert check is not None and check.status == FAIL and "starts over" in check.summary


def test_output_difference_fails_and_names_the_file() -> None:
    diff = diff_outputs({"result.txt": H["a"], "config.json": H["b"]}, {"result.txt": H["c"], "config.json": H["b"]},
                        ["result.txt", "config.json"])  # fmt: skip
    verdict = decide(*_good(), **_kwargs(outputs=diff, output_globs=["result.txt", "config.json"]))
    check = verdict.check("outputs")
    assert verdict.exit_code == EXIT_NOT_RESUMABLE and check is not None
    assert check.status == FAIL and check.summary.endswith(": result.txt") and "config.json" not in check.summary


# -- outputs compared by content --------------------------------------------------------------------
LIGHTNING = {"pytorch-lightning_version": "2.6.6"}


def _leaf(a: object, b: object) -> tuple[bool, str] | None:
    """A stand-in for tensors: a Fake is a leaf, equal when its values are."""
    if isinstance(a, Fake):
        return (isinstance(b, Fake) and a.values == b.values), "values differ"
    return None


@dataclass(frozen=True)
class Fake:
    values: tuple


def test_which_comparison_an_output_whose_bytes_differ_gets() -> None:
    assert comparison_for("model/last.CKPT", torch_available=True) == TORCH
    assert comparison_for("w.pt", torch_available=True, command=("cmp",)) == TORCH  # the built-in first
    assert comparison_for("w.pth", torch_available=False, command=("cmp",)) == COMMAND
    assert comparison_for("w.pth", torch_available=False) == BYTES
    assert comparison_for("metrics.json", torch_available=True) == BYTES
    assert comparison_for("metrics.json", torch_available=True, command=("cmp",)) == COMMAND
    assert "torch is not importable" in bytes_verdict("w.pt", torch_available=False).details[0]
    assert "--compare-command" in bytes_verdict("m.json", torch_available=True).details[0]


def test_the_walk_names_every_difference_in_the_files_order() -> None:
    ref = {
        "state_dict": {"w": Fake((1, 2)), "b": Fake((0,))},
        "epoch": 3,
        "lr": 0.1,
        "nan": float("nan"),
        "names": ["a", "b"],
        "gone": 1,
        "flag": True,
    }
    got = {"state_dict": {"w": Fake((1, 3)), "b": Fake((0,))}, "epoch": 3, "lr": 0.1, "nan": float("nan"),
           "names": ["a", "c"], "new": 2, "flag": 1}  # fmt: skip
    diff = compare_trees(ref, got, _leaf)
    assert [d.key for d in diff.differences] == [
        "['state_dict']['w']", "['names'][1]", "['gone']", "['flag']", "['new']"
    ]  # fmt: skip
    assert diff.differences[2].what == "missing after interruptions"
    assert diff.differences[3].what == "True (bool) in the reference, 1 (int) after interruptions"
    assert (diff.tensors, diff.equal) == (2, False)
    same = compare_trees(ref, {**ref, "nan": float("nan")}, _leaf)  # NaN equals NaN; nothing else differs
    assert same.equal and same.values == 9 and not same.ignored


def test_only_lightnings_documented_bookkeeping_is_ignored_and_it_is_listed() -> None:
    def ckpt(ready: int, elapsed: float, weight: tuple, step: int) -> dict:
        progress = {"total": {"ready": ready, "completed": 300}, "current": {"ready": ready - 200}}
        return {**LIGHTNING, "global_step": step, "state_dict": {"net.0.weight": Fake(weight)},
                "loops": {"fit_loop": {"epoch_loop.batch_progress": progress,
                                       "epoch_loop.state_dict": {"_batches_that_stepped": step}}},
                "callbacks": {"Timer{'duration': None}": {"time_elapsed": {"train": elapsed}}}}  # fmt: skip

    diff = compare_trees(ckpt(300, 1.5, (1,), 300), ckpt(301, 2.5, (1,), 300), _leaf)
    assert diff.equal
    progress = diff.ignored["Lightning loop progress counters"]
    assert [d.key for d in progress] == [
        "['loops']['fit_loop']['epoch_loop.batch_progress']['total']['ready']",
        "['loops']['fit_loop']['epoch_loop.batch_progress']['current']['ready']",
    ]
    assert [d.key for d in diff.ignored["Lightning Timer's elapsed time"]] == [
        "['callbacks'][\"Timer{'duration': None}\"]['time_elapsed']['train']"
    ]
    verdict = tree_verdict("final.ckpt", diff)
    assert verdict.equal and verdict.summary == (
        "the same content: 1 tensors and 3 other values compared exactly; 4 values under ignored keys not compared "
        "(the bytes differ in how they were serialized and in the ignored bookkeeping below)"
    )
    assert "ignored (Lightning loop progress counters): 3 values, 2 differ: ['loops']['fit_loop']" in verdict.details[0]
    assert verdict.details[1].startswith("ignored (Lightning Timer's elapsed time): 1 value, 1 differ: ")
    assert "300 in the reference, 301 after interruptions" in verdict.details[0]
    # What trains (weights, global_step, the loop's own step count) is never bookkeeping.
    bad = tree_verdict("final.ckpt", compare_trees(ckpt(300, 1.5, (1,), 300), ckpt(300, 1.5, (2,), 299), _leaf))
    assert (
        not bad.equal
        and bad.summary == "first difference at ['global_step']: 300 in the reference, 299 after interruptions"
    )
    assert "3 keys differ in all; next: ['state_dict']['net.0.weight']: values differ; ['loops']" in bad.details[0]
    # The same keys in a file that is not Lightning's are compared like any other.
    plain = {k: v for k, v in ckpt(300, 1.5, (1,), 300).items() if k != "pytorch-lightning_version"}
    other = {k: v for k, v in ckpt(301, 1.5, (1,), 300).items() if k != "pytorch-lightning_version"}
    assert not compare_trees(plain, other, _leaf).equal


def test_keys_the_user_ignores_are_left_out_in_any_file_and_listed() -> None:
    ref = {"meta": {"saved_at": 1.0, "saved_by": "a"}, "w": Fake((1,))}
    got = {"meta": {"saved_at": 2.0, "saved_by": "b"}, "w": Fake((1,))}
    rule = user_rule(" ['meta']['saved_at'] ")
    diff = compare_trees(ref, got, _leaf, [rule])
    assert [d.key for d in diff.differences] == ["['meta']['saved_by']"]
    assert (
        "ignored (--ignore-key ['meta']['saved_at']): 1 value, 1 differ: ['meta']['saved_at']: 1.0 in the "
        "reference, 2.0 after interruptions"
    ) in tree_verdict("m.pt", diff).details
    assert compare_trees(ref, got, _leaf, [user_rule("['meta']")]).equal  # and everything under it
    assert not compare_trees(ref, got, _leaf, [user_rule("['meta']['saved']")]).equal  # a whole key, not a prefix
    assert check_key("['meta']") == "" and "as the report prints it" in check_key("meta.saved_at")


def test_tensors_are_compared_bit_for_bit() -> None:
    torch = pytest.importorskip("torch")
    from airflow_grid_resume.verify.torchfiles import tensor_leaf

    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_leaf(a, a.clone()) == (True, "")
    b = a.clone()
    b[1, 2] += 1e-6
    assert tensor_leaf(a, b) == (False, "1 of 12 values differ (largest difference 9.54e-07)")
    assert tensor_leaf(a, a.double())[1] == "dtype torch.float32 in the reference, torch.float64 after interruptions"
    assert tensor_leaf(a, a.reshape(4, 3))[1] == "shape (3, 4) in the reference, (4, 3) after interruptions"
    nan = torch.tensor([float("nan"), 0.0])
    assert tensor_leaf(nan, nan.clone())[0]  # the same NaN is the same value
    assert tensor_leaf(nan, torch.tensor([float("nan"), -0.0])) == (
        False, "1 of 2 values have equal values but not equal bits (NaN payloads or signed zeros)"
    )  # fmt: skip
    assert tensor_leaf(nan, torch.tensor([1.0, 0.0])) == (False, "1 of 2 values differ (largest difference inf)")
    assert tensor_leaf(torch.tensor(3), torch.tensor(3))[0]  # 0-dim
    assert tensor_leaf(torch.zeros(0), torch.zeros(0))[0]
    assert tensor_leaf(a, [1.0])[0] is False and tensor_leaf(1, 1) is None


def test_torch_files_differing_in_bytes_only_match_and_a_changed_tensor_is_named(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from airflow_grid_resume.verify.torchfiles import compare_files

    weights = {"net.0.weight": torch.ones(4, 2), "net.0.bias": torch.zeros(4)}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.full((4, 2), 0.5)}}, "param_groups": []}
    torch.save({"state_dict": weights, "optimizer_states": [optimizer]}, tmp_path / "ref.pt")
    # The same values, pickled with other sharing: other bytes, the same content.
    torch.save({"state_dict": {k: v.clone() for k, v in weights.items()}, "optimizer_states": [optimizer]},
               tmp_path / "same.pt", _use_new_zipfile_serialization=False)  # fmt: skip
    assert (tmp_path / "ref.pt").read_bytes() != (tmp_path / "same.pt").read_bytes()
    same = compare_files("model.pt", str(tmp_path / "ref.pt"), str(tmp_path / "same.pt"))
    assert same.equal and same.method == TORCH and "4 tensors and 0 other values compared exactly" in same.summary
    changed = {k: v.clone() for k, v in weights.items()}
    changed["net.0.bias"][2] = 0.25
    torch.save({"state_dict": changed, "optimizer_states": [optimizer]}, tmp_path / "changed.pt")
    differ = compare_files("model.pt", str(tmp_path / "ref.pt"), str(tmp_path / "changed.pt"))
    assert not differ.equal
    assert (
        differ.summary
        == "first difference at ['state_dict']['net.0.bias']: 1 of 4 values differ (largest difference 0.25)"
    )
    # An object that weights_only refuses: loaded anyway (both files are the command's own), and said so.
    torch.save({"w": torch.ones(1), "when": datetime.date(2026, 12, 2)}, tmp_path / "obj1.pt")
    torch.save({"w": torch.ones(1), "when": datetime.date(2026, 12, 3)}, tmp_path / "obj2.pt")
    dated = compare_files("o.pt", str(tmp_path / "obj1.pt"), str(tmp_path / "obj2.pt"))
    assert dated.summary == (
        "first difference at ['when']: datetime.date(2026, 12, 2) in the reference, datetime.date(2026, 12, 3) "
        "after interruptions"
    )
    assert "loaded with weights_only=False" in dated.details[-1]


def test_a_file_torch_cannot_load_is_reported_as_differing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "a.pt").write_text("not a torch file")
    (tmp_path / "b.pt").write_text("not a torch file either")
    from airflow_grid_resume.verify.contents import _compare_torch

    verdict = _compare_torch("a.pt", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert not verdict.equal and "torch could not load it" in verdict.summary
    assert verdict.details[0].startswith("torch.load: ")


def test_the_users_comparator_decides_and_its_stderr_is_shown(tmp_path: Path) -> None:
    assert command_verdict("m.json", "cmp.py", 0, "equal once session is ignored\n").equal
    no = command_verdict("m.json", "cmp.py", 1, "\n".join(f"line {i}" for i in range(20)))
    assert not no.equal and no.summary == "--compare-command cmp.py says they differ (exit 1)"
    assert no.details[0] == "| line 8" and len(no.details) == 12
    failed = command_verdict("m.json", "cmp.py", None, "", "cmp.py did not end within 600 s")
    assert not failed.equal and failed.summary.endswith("could not compare it: cmp.py did not end within 600 s")
    # the edge, with real (tiny) processes
    said = run_command(["sh", "-c", "echo 'keys differ: lr' >&2; exit 1"], "m.json", "a", "b")
    assert not said.equal and said.details == ("| keys differ: lr",)
    assert run_command(["sh", "-c", 'test "$0" = a -a "$1" = b'], "m.json", "a", "b").equal
    missing = run_command([str(tmp_path / "nope")], "m.json", "a", "b")
    assert not missing.equal and "cannot run" in missing.summary


def test_outputs_equal_by_content_pass_and_a_content_difference_fails_naming_the_key() -> None:
    globs = ["final.ckpt", "result.txt"]
    same = Comparison("final.ckpt", TORCH, True, "the same content: 17 tensors and 106 other values compared exactly",
                      ("ignored (Lightning loop progress counters, 1 differ): ...",))  # fmt: skip
    diff = OutputDiff(same=["result.txt"], differ=["final.ckpt"], contents={"final.ckpt": same})
    check = decide(*_good(), **_kwargs(outputs=diff, output_globs=globs)).check("outputs")
    assert check.status == PASS
    assert (
        check.summary
        == "2 output files match the reference: final.ckpt, result.txt (1 by content, the rest byte for byte)"
    )
    assert check.details[0].startswith("final.ckpt: the same content") and "ignored" in check.details[1]
    other = Comparison("final.ckpt", TORCH, False, "first difference at ['state_dict']['w']: 3 of 8 values differ")
    differs = OutputDiff(same=["result.txt"], differ=["final.ckpt"], contents={"final.ckpt": other})
    verdict = decide(*_good(), **_kwargs(outputs=differs, output_globs=globs))
    check = verdict.check("outputs")
    assert verdict.exit_code == EXIT_NOT_RESUMABLE and check.status == FAIL
    assert check.summary == "the final outputs differ from the reference's: final.ckpt"
    assert check.details[0] == "differs: final.ckpt: first difference at ['state_dict']['w']: 3 of 8 values differ"
    # bytes that differ with no content comparison stay a difference
    assert not OutputDiff(differ=["final.ckpt"]).matches


def test_nothing_to_judge_is_inconclusive() -> None:
    reference, _ = _good()
    failed = _record("reference", 0.0, status="failed", exited_at=1.0, returncode=2,
                     outcome={"reason": "the command exited 2", "tail": ["boom"]})  # fmt: skip
    verdict = decide(failed, [], **_kwargs())
    assert verdict.exit_code == EXIT_INCONCLUSIVE and "the command exited 2" in verdict.checks[0].summary
    uninterrupted = [_record("session 1", 10, exited_at=13.0, returncode=0)]
    assert decide(reference, uninterrupted, **_kwargs()).exit_code == EXIT_INCONCLUSIVE


# -- real agents on a local S3 ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3() -> object:
    with MotoServer() as server:
        yield server


def run_verify(
    s3: MotoServer,
    tmp_path: Path,
    script: str,
    steps: int,
    step_seconds: float,
    notice: float = 2.0,
    *extra: str,
    **kw,
) -> tuple:
    workdir = tmp_path / "workdir"
    workdir.mkdir(exist_ok=True)
    command = (sys.executable, str(SCRIPTS / f"{script}.py"), str(steps), str(step_seconds), *extra)
    config = VerifyConfig(
        command=command, workdir=str(workdir), notice_seconds=notice, s3_endpoint=s3.endpoint_url, **kw
    )
    result = Verifier(config).run()
    verdict: Verdict = judge(result)
    return result, verdict, render(result, verdict)


def test_long_ignorer_under_ec2s_notice_is_killed(s3, tmp_path: Path) -> None:
    # The case: 4.5 s of work under a 120 s notice. Verify allows half the work left (at least 3 s), so the
    # ignorer is killed at the early first point, as it would be on EC2 with a run longer than the notice.
    result, verdict, report = run_verify(
        s3, tmp_path, "ignores_sigterm_with_child", 90, 0.05, 120.0, interruptions=2, seed=4
    )
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] sigterm: ignores SIGTERM: still running" in report and "killed" in report, report
    first = result.chain[0]
    assert first.killed and first.grace_seconds is not None and first.grace_seconds < 10, report
    assert result.chain[-1].status == "succeeded"  # resumed from its periodic checkpoint


def test_short_ignorer_that_finishes_is_caught_by_time(s3, tmp_path: Path) -> None:
    # Shorter than the window verify allows: it finishes despite the SIGTERM and exits 0.
    result, verdict, report = run_verify(
        s3, tmp_path, "ignores_sigterm_with_child", 30, 0.05, 120.0, interruptions=1, seed=1
    )
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] sigterm: ignores SIGTERM: exited" in report and "went on working until it finished" in report
    assert not result.chain[0].killed and result.chain[0].returncode == 0


def test_short_ignorer_that_finishes_is_caught_by_progress(s3, tmp_path: Path) -> None:
    _, verdict, report = run_verify(
        s3, tmp_path, "ignores_sigterm", 30, 0.05, 120.0, "protocol", interruptions=1, seed=1
    )
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] sigterm: ignores SIGTERM: went on to step 30, the end of the run, after SIGTERM" in report, report


def test_good_script_shorter_than_the_notice_with_absolute_paths(s3, tmp_path: Path) -> None:
    # Every session sees the same absolute workdir, as on an instance: an output that records it matches.
    _, verdict, report = run_verify(
        s3, tmp_path, "absolute_paths", 30, 0.05, 120.0, "protocol", interruptions=2, seed=2,
        outputs=("result.txt", "config.json"),
    )  # fmt: skip
    assert verdict.exit_code == EXIT_RESUMABLE, report
    assert "[PASS] outputs: 2 output files match the reference: config.json, result.txt" in report
    assert "[PASS] sigterm: exits 0 on SIGTERM within" in report
    assert re.search(r"\[PASS\] resume: resumes from its checkpoint: at most [01] steps? redone", report), report
    assert "[PASS] outputs" in report


def test_hang_after_resume_is_reported_and_stopped(s3, tmp_path: Path) -> None:
    started = time.monotonic()
    result, verdict, report = run_verify(s3, tmp_path, "hangs_after_resume", 40, 0.05, 2.0, interruptions=1, seed=1)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] resume: hangs after resuming: session 2 did not finish" in report
    assert result.chain[-1].timed_out and time.monotonic() - started < 60


def test_exits_143(s3, tmp_path: Path) -> None:
    result, verdict, report = run_verify(s3, tmp_path, "exits_143", 20, 0.05, interruptions=1, seed=3)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] sigterm: dies of SIGTERM (exit 143)" in report
    assert result.chain[0].returncode == 143 and result.chain[-1].status == "succeeded"


def test_piping_the_output_into_tee_fails_with_the_cause_named(s3, tmp_path: Path) -> None:
    """tee dies of the group's SIGTERM; the good script's next "step" line then breaks its save."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    script = f"{sys.executable} {SCRIPTS / 'good.py'} 40 0.05 | tee train.log"
    config = VerifyConfig(
        command=("bash", "-c", script), workdir=str(workdir), notice_seconds=2.0, s3_endpoint=s3.endpoint_url,
        interruptions=1, seed=3,
    )  # fmt: skip
    result = Verifier(config).run()
    verdict = judge(result)
    report = render(result, verdict)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert (
        "[FAIL] pipe: the command's output goes through a pipe (| tee): when the group gets SIGTERM, tee exits and "
        "the trainer's next print gets SIGPIPE; it broke the save here"
    ) in report, report
    assert "session 1: broken pipe after SIGTERM" in report, report


def test_a_shell_that_dies_of_sigterm_is_not_held_against_the_trainer(s3, tmp_path: Path) -> None:
    """bash does not exec the trainer in "python train.py && echo trained" and dies of the SIGTERM at once (143);
    the agent gives the trainer the group's time, so verify judges the trainer's own exit, as the agent saves."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    script = f"{sys.executable} {SCRIPTS / 'good.py'} 40 0.05 protocol && echo trained"
    config = VerifyConfig(
        command=("bash", "-c", script), workdir=str(workdir), notice_seconds=2.0, s3_endpoint=s3.endpoint_url,
        interruptions=1, seed=3,
    )  # fmt: skip
    result = Verifier(config).run()
    verdict = judge(result)
    report = render(result, verdict)
    assert verdict.exit_code == EXIT_RESUMABLE, report
    assert "[PASS] sigterm: exits 0 on SIGTERM" in report and "its shell died of the SIGTERM at once" in report
    first = result.chain[0]
    assert (first.shell_returncode, first.returncode) == (143, 0), report
    assert first.outcome is not None and first.outcome.manifest, report  # the trainer's save was synced
    assert (first.outcome.exit_code, first.outcome.clean) == (0, True)  # the agent judged the trainer too


def test_starts_over_is_caught_by_wall_time(s3, tmp_path: Path) -> None:
    _, verdict, report = run_verify(s3, tmp_path, "starts_over", 24, 0.05, interruptions=2, seed=3)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[PASS] sigterm" in report and "[FAIL] resume: starts over" in report


def test_non_atomic_checkpoint_cut_by_the_early_interruption(s3, tmp_path: Path) -> None:
    result, verdict, report = run_verify(s3, tmp_path, "non_atomic", 12, 0.0, interruptions=2, seed=3)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] resume: crashes after resuming" in report and "interrupted mid-write" in report
    assert "JSONDecodeError" in report
    assert result.chain[0].status == "interrupted" and result.chain[0].returncode == 0  # it "saved" and exited 0
    assert result.chain[1].crashed


def test_interruption_dependent_outputs_are_named(s3, tmp_path: Path) -> None:
    _, verdict, report = run_verify(
        s3, tmp_path, "interruption_dependent", 20, 0.05, interruptions=1, seed=3,
        outputs=("result.txt", "config.json"),
    )  # fmt: skip
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] outputs: the final outputs differ from the reference's: result.txt\n" in report
    assert "differs: result.txt" in report and "differs: config.json" not in report


def test_a_users_comparator_accepts_bookkeeping_and_its_stderr_is_reported(s3, tmp_path: Path) -> None:
    # config.json records the session it finished in: its bytes differ; the comparator is told to ignore that key.
    compare = (sys.executable, str(SCRIPTS / "compare_json.py"), "--ignore", "session")
    _, verdict, report = run_verify(
        s3, tmp_path, "records_session", 20, 0.05, 2.0, "protocol", interruptions=1, seed=3,
        outputs=("result.txt", "config.json"), compare_command=compare,
    )  # fmt: skip
    assert verdict.exit_code == EXIT_RESUMABLE, report
    assert "[PASS] outputs: 2 output files match the reference: config.json, result.txt (1 by content" in report
    assert "config.json: equivalent by --compare-command" in report and "| equal once session is ignored" in report
    assert "others by --compare-command" in report


def test_good_script_through_the_command(tmp_path: Path) -> None:
    """The real command, as a user runs it: the script is in the workdir; nothing is left behind. The run
    (1.5 s) is longer than the 1 s notice window."""
    workdir, scratch = tmp_path / "project", tmp_path / "scratch"
    workdir.mkdir()
    scratch.mkdir()
    for name in ("good.py", "_train.py"):
        shutil.copy(SCRIPTS / name, workdir / name)
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "airflow_grid_resume.cli", "verify", "--workdir", str(workdir),
            "--interruptions", "2", "--seed", "5", "--notice-seconds", "1", "--outputs", "result.txt",
            "--outputs", "config.json", "--progress-regex", r"^step (\d+)", "--", "python", "good.py", "30", "0.05",
        ],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    report = proc.stdout
    assert proc.returncode == 0, report + proc.stderr
    assert "verdict: RESUMABLE (exit 0)" in report
    assert "[PASS] sigterm: exits 0 on SIGTERM within" in report
    assert "[PASS] resume: resumes from its checkpoint" in report and "STARTED OVER" not in report
    assert "[PASS] outputs: 2 output files match the reference: config.json, result.txt" in report
    assert "seed 5 (rerun with --seed 5)" in report
    assert "small files that change at every sync" in report and "events.log" in report
    # for real, at a step (the script prints progress), whatever the machine's speed
    assert re.search(r"session 1 +SIGTERM \d+\.\d+ s in \(notice planned at step \d+\); exit 0 ", report)
    assert re.search(r"session 2 +restored 000001-000001\.json", report)  # the next instance resumed from it
    assert list(scratch.iterdir()) == []  # temp dirs of verify and of its agents are gone
    assert not _processes_mentioning(str(scratch))  # no agent, probe or command left running
    assert sorted(p.name for p in workdir.iterdir()) == ["_train.py", "good.py"]  # the user's dir is untouched


def test_usage_errors(tmp_path: Path) -> None:
    from airflow_grid_resume.verify.cli import main

    assert main(["--workdir", str(tmp_path)]) == 2
    assert main(["--workdir", str(tmp_path / "missing"), "--", "true"]) == 2
    assert main(["--interruptions", "0", "--", "true"]) == 2
    assert main(["--compare-command", "no-such-comparator --x", "--", "true"]) == 2
    assert main(["--compare-command", "", "--", "true"]) == 2
    assert main(["--compare-command", "'unbalanced", "--", "true"]) == 2
    assert main(["--ignore-key", "meta.saved_at", "--", "true"]) == 2


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline or text in environ:
                found.append(int(entry))
    return found


def test_verifier_cleans_up_when_the_reference_fails(s3, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    workdir = tmp_path / "w"
    workdir.mkdir()
    config = VerifyConfig(
        command=(sys.executable, "-c", "import sys; print('boom'); sys.exit(4)"),
        workdir=str(workdir), notice_seconds=2.0, s3_endpoint=s3.endpoint_url,
    )  # fmt: skip
    result = Verifier(config).run()
    verdict = judge(result)
    assert verdict.exit_code == EXIT_INCONCLUSIVE and not result.chain
    assert "the command exited 4" in render(result, verdict)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    assert file_hashes(None) == {}


def test_killing_verify_ends_its_agents_and_commands(tmp_path: Path) -> None:
    """SIGKILL leaves verify no chance to clean up: its agents and local S3 end because their parent died."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    workdir = tmp_path / "w"
    workdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_grid_resume.cli", "verify", "--workdir", str(workdir), "--",
         sys.executable, str(SCRIPTS / "ignores_sigterm_with_child.py"), "400", "0.05"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob("grid-resume-verify-*/probe/reference.start.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert len(_processes_mentioning(str(scratch))) >= 4  # moto, the agent, the probe, the script, its child
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while _processes_mentioning(str(scratch)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_mentioning(str(scratch))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_mentioning(str(scratch)):
            os.kill(pid, signal.SIGKILL)


def test_stopping_verify_stops_everything_it_started(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    workdir = tmp_path / "w"
    workdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_grid_resume.cli", "verify", "--workdir", str(workdir), "--notice-seconds",
         "2", "--", sys.executable, str(SCRIPTS / "good.py"), "400", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob("grid-resume-verify-*/probe/reference.start.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert _processes_mentioning(str(scratch))  # the agent, the probe and the script are running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "everything it started was stopped" in err
    assert list(scratch.iterdir()) == [] and not _processes_mentioning(str(scratch))
