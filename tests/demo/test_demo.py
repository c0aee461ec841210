"""The demo's pieces: the chaos schedule, the figures of its summary, the timeline picture, and the
training script's promise (resumed = uninterrupted, bit for bit). `make demo` itself runs in CI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import xml.dom.minidom
from pathlib import Path

import pytest

from airflow_grid_resume.demo.chaos import HARD_LOSS, NOTICE, WITHHOLD, ChaosSchedule
from airflow_grid_resume.demo.report import last_step, resumed_at, steps_lost, summary_lines, verdict
from airflow_grid_resume.ui.timeline import timeline_svg

TRAIN = Path(__file__).resolve().parents[2] / "dags" / "demo_training" / "train.py"


def test_chaos_hits_each_session_once_at_its_step() -> None:
    chaos = ChaosSchedule.default(400, withhold_seconds=20)
    assert [e.kind for e in chaos.events] == [WITHHOLD, NOTICE, HARD_LOSS]
    assert chaos.withholding().seconds == 20 and chaos.interruptions == 2
    assert chaos.due(1, 100) == []  # not far enough
    assert chaos.due(3, 399) == []  # no event for session 3
    assert [e.kind for e in chaos.due(1, 125)] == [NOTICE]
    assert chaos.due(1, 130) == []  # once
    assert not chaos.finished()
    assert [e.kind for e in chaos.due(2, 260)] == [HARD_LOSS]
    assert chaos.finished()


def test_steps_lost_per_interruption_from_the_logs() -> None:
    sessions = [
        {
            "session": 1,
            "status": "interrupted",
            "log": "fresh start\nstep 10 loss 1\nSIGTERM: checkpoint saved at step 13",
        },
        {"session": 2, "status": "lost", "log": "resumed from checkpoint at step 13\nstep 20 loss 1\nstep 30 loss 1\n"},
        {"session": 3, "status": "succeeded", "log": "resumed from checkpoint at step 20\nstep 40 loss 1\ndone"},
    ]
    assert last_step(sessions[0]["log"]) == 13 and resumed_at(sessions[0]["log"]) == 0
    losses = steps_lost(sessions)
    assert [(x["session"], x["reached"], x["resumed_at"], x["steps_lost"]) for x in losses] == [
        (1, 13, 13, 0),
        (2, 30, 20, 10),
    ]
    assert steps_lost([{**sessions[0], "log": ""}, sessions[1]])[0]["steps_lost"] is None


def test_verdict_names_what_went_wrong() -> None:
    good = dict(dag_state="success", statuses=["interrupted", "lost", "succeeded"], expected_interruptions=2)
    assert verdict(**good, metric={"a": 1}, reference={"a": 1}) == []
    problems = verdict(**{**good, "dag_state": "failed"}, metric={"a": 1}, reference={"a": 2})
    assert any("ended failed" in p for p in problems) and any("differs" in p for p in problems)
    assert any(
        "1 interruptions" in p for p in verdict(**{**good, "statuses": ["lost", "succeeded"]}, metric=1, reference=1)
    )


def test_summary_lines_say_sessions_losses_wait_cost_and_metric() -> None:
    summary = {
        "sessions": 2,
        "interruptions": 1,
        "spot_seconds": 100.0,
        "estimated_cost_usd": 0.01,
        "on_demand_cost_usd": 0.03,
        "session_details": [
            {"session": 1, "status": "lost", "instance_type": "g5.xlarge"},
            {"session": 2, "status": "succeeded", "instance_type": "g5.xlarge"},
        ],
    }
    losses = [{"session": 1, "status": "lost", "reached": 30, "resumed_at": 20, "steps_lost": 10}]
    text = "\n".join(summary_lines(summary, losses, waited_seconds=12, metric={"x": 1}, reference={"x": 1}))
    assert "lost without notice" in text and "10 steps redone" in text
    assert "capacity waited: 12 s" in text and "67 % saved" in text and "identical" in text


def test_timeline_is_valid_svg_with_a_row_per_session(tmp_path: Path) -> None:
    rows = [
        {"session": 1, "status": "interrupted", "instance_type": "g5.xlarge", "lifecycle": "spot",
         "wait_start": 0.0, "start": 20.0, "end": 60.0, "checkpoints": [30.0, 40.0]},
        {"session": 2, "status": "succeeded", "instance_type": "g4dn.xlarge", "lifecycle": "spot",
         "wait_start": 62.0, "start": 65.0, "end": 120.0, "checkpoints": [90.0]},
    ]  # fmt: skip
    svg = timeline_svg(rows, title="demo <run>")
    doc = xml.dom.minidom.parseString(svg)  # well-formed, the title escaped
    texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
    assert "demo <run>" in texts
    assert any("session 1" in t for t in texts) and any("session 2" in t for t in texts)
    assert any("notice" in t for t in texts)
    checkpoint_marks = [ln for ln in doc.getElementsByTagName("line") if ln.getAttribute("stroke") == "#1f3b73"]
    assert len(checkpoint_marks) == 3
    with pytest.raises(ValueError):
        timeline_svg([], title="empty")


def run_train(workdir: Path, *args: str, stop_at_step: int | None = None) -> subprocess.CompletedProcess:
    """Run the demo's script; with ``stop_at_step``, SIGTERM it once it has reported that step (counted from
    its output, not the clock: importing scikit-learn on a busy machine takes seconds)."""
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    head = ""
    if stop_at_step is not None:
        assert proc.stdout is not None
        for line in proc.stdout:
            head += line
            if line.startswith(f"step {stop_at_step} "):
                proc.send_signal(signal.SIGTERM)
                break
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, head + out)


def test_the_demo_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for directory in (reference, interrupted):
        directory.mkdir()
        shutil.copy(TRAIN, directory / "train.py")
    assert run_train(reference, "--steps", "120").returncode == 0
    first = run_train(interrupted, "--steps", "120", "--step-seconds", "0.02", stop_at_step=30)
    assert first.returncode == 0 and "SIGTERM: checkpoint saved at step" in first.stdout, first.stdout
    assert not (interrupted / "metrics.json").exists()
    second = run_train(interrupted, "--steps", "120")
    assert "resumed from checkpoint at step" in second.stdout and second.returncode == 0
    assert json.loads((interrupted / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )


def test_a_session_the_airflow_side_misread_fails_the_demo() -> None:
    from airflow_grid_resume.demo.report import misread_sessions

    records = [
        {"session": 1, "outcome": {"status": "interrupted"}, "closed": {"status": "interrupted"}},
        {"session": 2, "outcome": None, "closed": {"status": "lost"}},  # a real loss: no outcome
        {"session": 3, "outcome": {"status": "succeeded"}, "closed": {"status": "lost"}},
    ]
    misread = misread_sessions(records)
    assert misread == ["session 3: the agent said succeeded, the Airflow side saw lost"]
    good = dict(dag_state="success", statuses=["interrupted", "lost", "succeeded"], expected_interruptions=2)
    assert verdict(**good, metric=1, reference=1, misread=misread) == misread


def test_live_status_says_what_it_means() -> None:
    from airflow_grid_resume.demo.run import live_status

    assert live_status({"state": None, "try_number": 0}, 0, 0, 2) == (
        "task not scheduled yet (no try yet), no session yet, chaos: 0 of 2 planned interruptions done"
    )
    assert live_status({"state": "deferred", "try_number": 2}, 2, 1, 2) == (
        "task deferred (try 2), session 2, chaos: 1 of 2 planned interruptions done"
    )


def test_a_stopped_components_children_do_not_outlive_it() -> None:
    """The leader exits on SIGTERM while its child ignores it (as the api-server's uvicorn worker did):
    stopping the component leaves nothing of its process group running."""
    from airflow_grid_resume.demo.stack import end_group

    script = "(trap '' TERM; while true; do sleep 0.2; done) & echo $!; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    end_group(proc, signal.SIGTERM, grace=10)
    assert proc.returncode is not None
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the child outlived its stopped component"
        time.sleep(0.05)
