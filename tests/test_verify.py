"""``grid-resume verify``: the pure decisions (no server), then real agents on a local moto S3 against
a good script and five bad ones, and the command itself as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import pytest

from airflow_grid_resume.agent.manifest import FileEntry, Manifest
from airflow_grid_resume.agent.records import Outcome
from airflow_grid_resume.emulator.moto_server import MotoServer
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
from airflow_grid_resume.verify.outputs import diff_outputs, file_hashes
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

SCRIPTS = Path(__file__).parent / "scripts" / "verify"
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
    result, verdict, report = run_verify(s3, tmp_path, "hangs_after_resume", 12, 0.05, 2.0, interruptions=1, seed=1)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] resume: hangs after resuming: session 2 did not finish" in report
    assert result.chain[-1].timed_out and time.monotonic() - started < 60


def test_exits_143(s3, tmp_path: Path) -> None:
    result, verdict, report = run_verify(s3, tmp_path, "exits_143", 20, 0.05, interruptions=1, seed=3)
    assert verdict.exit_code == EXIT_NOT_RESUMABLE, report
    assert "[FAIL] sigterm: dies of SIGTERM (exit 143)" in report
    assert result.chain[0].returncode == 143 and result.chain[-1].status == "succeeded"


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
