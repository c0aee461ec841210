"""The agent as a real process: real signals, real process groups, moto over HTTP, the IMDS emulator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.emulator.faultproxy import FaultProxy, FaultRule
from airflow_grid_resume.emulator.imds import MetadataService
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from tests.agent.test_sync import bytes_snapshot, make_odd_tree
from tests.conftest import TRAIN, heartbeat_of, outcome_of, pids_in_group

FAST = ["--sync-reserve", "1", "--min-grace", "1", "--imds-poll", "0.2", "--log-interval", "0.3"]


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def train(steps: int = 30, step_seconds: float = 0.05, *extra: str) -> list[str]:
    return [sys.executable, TRAIN, str(steps), str(step_seconds), *extra]


def test_interrupt_and_resume_matches_uninterrupted(agent, bucket: str, ledger: RunLedger, tmp_path: Path) -> None:
    reference = agent(f"s3://{bucket}/reference", tmp_path / "ref", *train(), options=FAST)
    assert reference.wait() == 0
    expected = (tmp_path / "ref" / "result.txt").read_text()

    run = f"s3://{bucket}/{ledger.location.prefix}"
    saved_steps = []
    for session in (1, 2):
        workdir = tmp_path / f"instance-{session}"  # a fresh instance: only the ledger carries state
        with MetadataService() as imds:
            proc = agent(run, workdir, *train(), options=FAST, imds=imds)
            wait_for(lambda p=proc, s=session: f"step {8 * s + 2}" in p.stdout, what="training progress")
            imds.schedule_notice(in_seconds=4)
            assert proc.wait() == 0
        outcome = outcome_of(ledger, session)
        assert outcome["status"] == "interrupted" and outcome["clean"], outcome
        assert outcome["notice"]["source"] == "imds"
        saved = int(proc.stdout.split("saved at step ")[1].split()[0])
        saved_steps.append(saved)
        assert not (workdir / "result.txt").exists()
    final = agent(run, tmp_path / "instance-3", *train(), options=FAST)
    assert final.wait() == 0
    assert outcome_of(ledger, 3)["status"] == "succeeded"
    assert (tmp_path / "instance-3" / "result.txt").read_text() == expected
    # No step lost: each session resumed exactly where the previous one saved.
    history = (tmp_path / "instance-3" / "history.txt").read_text().splitlines()
    assert history == [
        f"session 1: steps 0-{saved_steps[0]} interrupted",
        f"session 2: steps {saved_steps[0]}-{saved_steps[1]} interrupted",
        f"session 3: steps {saved_steps[1]}-30 done",
    ]
    assert "resumed at step" in final.stdout and "GRID" not in final.stderr
    # The checkpoint bytes each session moved, for the transfer cost of a session in another region.
    first, third = outcome_of(ledger, 1)["transfer"], outcome_of(ledger, 3)["transfer"]
    assert first["downloaded_bytes"] == 0 and first["uploaded_bytes"] > 0  # nothing to restore yet
    assert third["downloaded_bytes"] > 0 and third["uploaded_bytes"] > 0
    beat = heartbeat_of(ledger, 3)["transfer"]  # what a lost session is counted from: a lower bound
    assert beat["downloaded_bytes"] == third["downloaded_bytes"] and beat["uploaded_bytes"] <= third["uploaded_bytes"]


def test_scheduled_event_checkpoints_and_ends_interrupted_with_nothing_lost(
    agent, bucket: str, ledger: RunLedger, tmp_path: Path
) -> None:
    """An EC2 scheduled reboot, posted a few seconds ahead: one early sync while the event is far, then a stop
    a notice window before its NotBefore; the next session resumes exactly where the script saved."""
    reference = agent(f"s3://{bucket}/reference", tmp_path / "ref", *train(120, 0), options=FAST)
    assert reference.wait() == 0
    run = f"s3://{bucket}/{ledger.location.prefix}"
    with MetadataService() as imds:
        proc = agent(
            run, tmp_path / "instance-1", *train(120, 0.05), options=[*FAST, "--notice-window", "2"], imds=imds
        )
        wait_for(lambda: "step 5" in proc.stdout, what="training progress")
        imds.schedule_event(code="system-reboot", in_seconds=4)
        assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["clean"], outcome
    assert (outcome["notice"]["source"], outcome["notice"]["action"]) == ("scheduled", "reboot")
    assert "EC2 scheduled system-reboot" in proc.stderr and "syncing now" in proc.stderr
    reasons = [ledger.read_manifest(m).reason for m in ledger.list_manifests()]
    assert "scheduled" in reasons and "final" in reasons  # the early sync, then the final one
    saved = int(proc.stdout.split("saved at step ")[1].split()[0])
    final = agent(run, tmp_path / "instance-2", *train(120, 0.01), options=FAST)
    assert final.wait() == 0
    history = (tmp_path / "instance-2" / "history.txt").read_text().splitlines()
    assert history == [f"session 1: steps 0-{saved} interrupted", f"session 2: steps {saved}-120 done"]
    assert (tmp_path / "instance-2" / "result.txt").read_text() == (tmp_path / "ref" / "result.txt").read_text()


def test_rebalance_syncs_without_stopping(agent, run_uri: str, ledger: RunLedger, tmp_path: Path, imds) -> None:
    proc = agent(run_uri, tmp_path / "w", *train(40, 0.05), options=FAST, imds=imds)
    wait_for(lambda: "step 10" in proc.stdout, what="progress")
    imds.schedule_rebalance()
    wait_for(lambda: any(m.session == 1 for m in ledger.list_manifests()), what="a rebalance manifest")
    assert proc.wait() == 0
    assert outcome_of(ledger, 1)["status"] == "succeeded"
    reasons = [ledger.read_manifest(m).reason for m in ledger.list_manifests()]
    assert "rebalance" in reasons and "final" in reasons
    assert "saved at step" not in proc.stdout  # never signalled


def test_child_ignoring_sigterm_is_killed_with_grandchildren(agent, run_uri, ledger, tmp_path: Path, imds) -> None:
    script = 'trap "" TERM; echo $$ > pgid; (sleep 300 &); sleep 300 & echo started; wait'
    proc = agent(run_uri, tmp_path / "w", "sh", "-c", script, options=FAST, imds=imds)
    pgid_file = tmp_path / "w" / "pgid"
    wait_for(lambda: "started" in proc.stdout and pgid_file.exists(), what="the command to start")
    pgid = int(pgid_file.read_text())
    assert len(pids_in_group(pgid)) >= 3  # sh, its sleep, and the orphaned sleep
    imds.schedule_notice(in_seconds=3)
    assert proc.wait() == 0
    assert pids_in_group(pgid) == []
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["clean"] is False
    assert "killed" in outcome["reason"]


def test_agent_sigterm_counts_as_notice(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    proc = agent(run_uri, tmp_path / "w", *train(200, 0.05), options=FAST)
    wait_for(lambda: "step 5" in proc.stdout, what="progress")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "signal"
    restored = ledger.read_manifest(ledger.list_manifests()[0])
    assert "ckpt.json" in [f.path for f in restored.files]


def test_exit_143_is_interrupted_with_warning(agent, run_uri, ledger, tmp_path: Path, imds) -> None:
    proc = agent(run_uri, tmp_path / "w", *train(200, 0.05, "--on-sigterm", "default"), options=FAST, imds=imds)
    wait_for(lambda: "step 3" in proc.stdout, what="progress")
    imds.schedule_notice(in_seconds=10)
    assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["exit_code"] == 143
    assert any("143" in w for w in outcome["warnings"])
    assert "143" in proc.stderr


def test_script_failure_keeps_code_and_tail(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    proc = agent(run_uri, tmp_path / "w", "sh", "-c", "echo loading data; echo 'CUDA out of memory' >&2; exit 3")
    assert proc.wait() == 3
    outcome = outcome_of(ledger, 1)
    assert (outcome["status"], outcome["exit_code"]) == ("failed", 3)
    assert "CUDA out of memory" in outcome["tail"]
    assert "CUDA out of memory" in proc.stderr  # stderr passed through to the agent's stderr
    assert "loading data" in proc.stdout


def test_command_not_found_is_failed_127(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    proc = agent(run_uri, tmp_path / "w", "no-such-trainer", "--epochs", "3")
    assert proc.wait() == 127
    outcome = outcome_of(ledger, 1)
    assert (outcome["status"], outcome["exit_code"]) == ("failed", 127)
    assert "command not found: 'no-such-trainer'" in proc.stderr


def test_bad_input_is_explained(agent, bucket: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (("s3:/typo", tmp_path / "w"), 2, "--run-uri must look like s3://BUCKET/PREFIX"),
        ((f"s3://{bucket}/r", blocker / "sub"), 2, "cannot be created"),
        (("s3://no-such-bucket-here/r", tmp_path / "w"), 4, "bucket 'no-such-bucket-here' does not exist"),
    ]
    for (uri, workdir), code, message in cases:
        proc = agent(uri, workdir, "true")
        assert proc.wait() == code
        assert message in proc.stderr
    no_creds = agent(
        f"s3://{bucket}/r",
        tmp_path / "w",
        "true",
        env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"},
    )
    assert no_creds.wait() == 4
    assert "no AWS credentials found" in no_creds.stderr


def test_second_agent_on_same_run_is_refused(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    first = agent(run_uri, tmp_path / "a", *train(60, 0.05), options=FAST)
    wait_for(lambda: "step 3" in first.stdout, what="first agent running")
    second = agent(run_uri, tmp_path / "b", "sh", "-c", "echo should-not-run > ran")
    assert second.wait() == 3
    assert "another agent is already running" in second.stderr
    assert not (tmp_path / "b" / "ran").exists()
    assert first.wait() == 0 and outcome_of(ledger, 1)["status"] == "succeeded"
    assert ledger.list_sessions() == [1]


def test_metadata_faults_are_never_a_notice(agent, run_uri, ledger, tmp_path: Path, imds) -> None:
    imds.inject_fault(status=503, count=4)
    imds.inject_fault(delay=1.5, count=2)  # longer than the 1 s request timeout
    imds.inject_fault(status=500, count=2, path_prefix="/latest/meta-data/spot")
    proc = agent(run_uri, tmp_path / "w", *train(400, 0.05), options=[*FAST, "--verbose"], imds=imds)
    action = "/latest/meta-data/spot/instance-action"
    wait_for(lambda: not imds.state()["faults"] and imds.state()["requests"].get(action, 0) >= 2, what="faults served")
    assert proc.proc.poll() is None and "interruption notice" not in proc.stderr
    imds.expire_tokens()  # the next request gets 401 and must fetch a new token
    wait_for(lambda: "metadata token rejected (401)" in proc.stderr, what="the 401 to be seen")
    imds.schedule_notice(in_seconds=5)
    assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "imds"
    assert "answered HTTP 503" in proc.stderr and "timed out" in proc.stderr


def test_metadata_disabled(agent, run_uri: str, ledger: RunLedger, tmp_path: Path, imds) -> None:
    imds.set_disabled()
    proc = agent(run_uri, tmp_path / "w", "true", options=FAST, imds=imds)
    assert proc.wait() == 0
    assert "disabled" in proc.stderr and "signals only" in proc.stderr
    strict = agent(run_uri, tmp_path / "w2", "true", options=[*FAST, "--require-imds"], imds=imds)
    assert strict.wait() == 2
    assert "--require-imds" in strict.stderr


def test_output_is_shipped_while_running(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    script = "echo first-line; while [ ! -e release ]; do sleep 0.1; done; echo last-line"
    proc = agent(run_uri, tmp_path / "w", "sh", "-c", script, options=FAST)
    text = wait_for(lambda: ledger.read_log(1, 0)[0].decode(), timeout=30, what="output in the ledger")
    wait_for(lambda: b"first-line" in ledger.read_log(1, 0)[0], timeout=30, what="the first line shipped")
    assert proc.proc.poll() is None, "the line must be readable while the command still runs"
    (tmp_path / "w" / "release").touch()
    heartbeat = heartbeat_of(ledger, 1)
    assert heartbeat["state"] == "running"
    assert proc.wait() == 0
    data, offset = ledger.read_log(1, 0)
    assert b"last-line" in data and offset == len(data)
    assert text


def test_heavy_output_is_not_lost(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    lines = 2_000_000  # 200 MB
    code = f"import sys\nw=sys.stdout.write\nfor i in range({lines}): w('%099d\\n' % i)\n"
    proc = agent(run_uri, tmp_path / "w", sys.executable, "-c", code, options=FAST)
    assert proc.wait(timeout=180) == 0
    assert os.path.getsize(proc.stdout_path) == lines * 100
    shipped = sum(int(o["Size"]) for o in ledger.list(ledger.session_key(1, "logs/")))
    assert shipped > lines * 100  # every byte of the command, plus the agent's own lines
    tail, _ = ledger.read_log(1, shipped - 4096)
    assert b"%099d" % (lines - 1) in tail


def test_killed_mid_upload_restores_previous_manifest(agent, moto, bucket, tmp_path: Path) -> None:
    run = f"s3://{bucket}/killed"
    first = agent(run, tmp_path / "i1", "sh", "-c", "echo v1 > ckpt", options=FAST)
    assert first.wait() == 0
    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.add_rule(FaultRule(status=0, delay=0.5, rate=1.0, method="PUT", path_contains="/objects/"))
        cmd = "echo v2 > ckpt; head -c 50000000 /dev/urandom > big.bin"
        second = agent(
            run,
            tmp_path / "i2",
            "sh",
            "-c",
            cmd,
            options=[*FAST, "--parallelism", "1", "--lease-ttl", "2"],
            env={"AWS_ENDPOINT_URL": proxy.endpoint_url},
        )
        wait_for(lambda: proxy.rules[0].hits >= 2, what="the final sync uploading")
        second.kill()  # the instance vanishes mid-upload
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run))
    assert [m.name for m in ledger.list_manifests()] == ["000001-000001.json"]
    assert outcome_of(ledger, 2) is None
    time.sleep(2.1)  # the dead agent's lease expires
    third = agent(run, tmp_path / "i3", "cat", "ckpt", options=FAST)
    assert third.wait() == 0
    assert "v1" in third.stdout and not (tmp_path / "i3" / "big.bin").exists()


def test_zipapp_runs_with_only_python_and_boto3(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    pyz = tmp_path / "agent.pyz"
    subprocess.run([sys.executable, "-m", "airflow_grid_resume.cli", "build-agent", str(pyz)], check=True)
    venv = tmp_path / "ami"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = Path(__file__).resolve().parents[2] / "constraints.txt"
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(constraints), "boto3"], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(pyz),
            "--run-uri",
            run_uri,
            "--workdir",
            str(tmp_path / "w"),
            "--no-imds",
            "--",
            "sh",
            "-c",
            "echo from-zipapp > out.txt",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert outcome_of(ledger, 1)["status"] == "succeeded"
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
    assert "airflow" not in frozen.lower()


def test_unverifiable_checkpoints_are_recorded_not_overwritten(agent, run_uri, ledger, tmp_path: Path) -> None:
    first = agent(run_uri, tmp_path / "i1", "sh", "-c", "echo precious > weights", options=FAST)
    assert first.wait() == 0
    manifest = ledger.read_manifest(ledger.list_manifests()[0])
    ledger.put(ledger.blob_keys(manifest.files[0])[0], b"bit rot!")
    second = agent(run_uri, tmp_path / "i2", "sh", "-c", "echo fresh > weights", options=FAST)
    assert second.wait() == 5
    assert "Refusing to start over" in second.stderr
    outcome = outcome_of(ledger, 2)
    assert outcome["status"] == "failed" and "no restorable checkpoint" in outcome["reason"]
    assert not (tmp_path / "i2" / "weights").exists()  # the command never ran
    assert [m.name for m in ledger.list_manifests()] == ["000001-000001.json"]  # nothing saved was replaced


def test_an_unwatched_session_stops_itself_and_keeps_its_checkpoint(agent, run_uri, ledger, tmp_path: Path) -> None:
    """No trigger rewrites watch.json (its task was marked failed while no trigger ran): the agent
    stops the command like an interruption, saves the checkpoint and ends, so the instance ends too."""
    proc = agent(run_uri, tmp_path / "w", *train(400, 0.05), options=[*FAST, "--unwatched-timeout", "4"])
    assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "unwatched"
    assert "no Airflow trigger has watched this session" in proc.stderr
    saved = ledger.read_manifest(ledger.list_manifests()[-1])
    assert "ckpt.json" in [f.path for f in saved.files]


def test_a_watched_session_is_not_stopped(agent, run_uri, ledger, tmp_path: Path) -> None:
    options = [*FAST, "--unwatched-timeout", "3", "--session", "1"]
    proc = agent(run_uri, tmp_path / "w", *train(60, 0.1), options=options)
    watch_key = ledger.session_key(1, "watch.json")
    beats = 0
    while proc.proc.poll() is None:
        ledger.put_json(watch_key, {"log_offset": 0, "at": time.time(), "beat": beats})  # a trigger's beat
        beats += 1
        time.sleep(0.5)
    assert proc.wait() == 0
    assert outcome_of(ledger, 1)["status"] == "succeeded"


def test_a_planned_stop_asked_in_watch_json_saves_and_ends_the_session_as_stopped(
    agent, run_uri, ledger, tmp_path: Path
) -> None:
    """A deadline= run leaving on-demand for spot: the trigger writes ``stop`` into watch.json; the agent stops the
    command as on a notice (SIGTERM, its save, the final sync) and records ``stopped``, which spends no budget."""
    options = [*FAST, "--heartbeat-interval", "0.5", "--session", "1"]  # read on every beat
    proc = agent(run_uri, tmp_path / "w", *train(400, 0.05), options=options)
    watch_key = ledger.session_key(1, "watch.json")
    stop = {"reason": "back to spot in us-east-1a: 2.0 h of slack", "at": time.time()}
    beats = 0
    while proc.proc.poll() is None:
        training = (tmp_path / "w" / "pid").exists() and beats >= 4  # the command runs and has saved a step
        doc = {"log_offset": 0, "at": time.time(), "beat": beats, **({"stop": stop} if training else {})}
        ledger.put_json(watch_key, doc)
        beats += 1
        time.sleep(0.5)
    assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "stopped" and outcome["clean"] and outcome["notice"]["source"] == "planned"
    assert "planned stop asked by the Airflow side: back to spot in us-east-1a" in proc.stderr
    saved = ledger.read_manifest(ledger.list_manifests()[-1])
    assert "ckpt.json" in [f.path for f in saved.files]  # the command's save, synced


def test_lost_answers_to_its_conditional_writes_are_adopted(agent, moto, bucket: str, tmp_path: Path) -> None:
    """A lease or session write applied by S3 whose answer was lost is retried by botocore and sees 412:
    the agent reads its own bytes back and carries on, instead of stopping as if its lease were stolen."""
    run = f"s3://{bucket}/lost-answers"
    with FaultProxy(moto.endpoint_url) as proxy:
        lease = proxy.add_rule(FaultRule(drop=True, rate=1.0, method="PUT", path_contains="lease.json", limit=3))
        claim = proxy.add_rule(FaultRule(drop=True, rate=1.0, method="PUT", path_contains="session.json", limit=1))
        proc = agent(run, tmp_path / "w", *train(40, 0.05), options=FAST, env={"AWS_ENDPOINT_URL": proxy.endpoint_url})
        assert proc.wait() == 0, proc.stderr
    assert (lease.hits, claim.hits) == (3, 1)
    outcome = outcome_of(RunLedger(make_s3_client(), parse_s3_uri(run)), 1)
    assert outcome["status"] == "succeeded" and outcome["notice"] is None, outcome
    assert "taken by another agent" not in proc.stderr


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_a_full_disk_ends_the_session_as_a_failure_that_says_so(agent, run_uri, ledger, tmp_path: Path) -> None:
    """An agent error nobody planned for (here: the new instance's disk is too small for the checkpoint)
    is a failed outcome with a hint, never a silent agent the Airflow side would relaunch again and again."""
    first = agent(run_uri, tmp_path / "big", "sh", "-c", "head -c 3000000 /dev/urandom > ckpt.bin", options=FAST)
    assert first.wait() == 0
    small = tmp_path / "small"
    mounted = _tmpfs(small, "1m")
    assert mounted, "mounting a 1 MiB tmpfs failed: this test needs root (make test and CI run as root)"
    try:
        second = agent(run_uri, small / "w", "true", options=FAST)
        assert second.wait() == 6  # EXIT_DISK_FULL: not the script's failure, not an agent crash
        assert list((small / "w").rglob("*")) == []  # what the restore wrote is removed
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    outcome = outcome_of(ledger, 2)
    assert outcome["status"] == "failed" and outcome["cause"] == "disk_full", outcome
    assert "No space left on device" in outcome["reason"] and "000001-000001.json (2.9 MiB" in outcome["reason"]
    assert "not a failure of the script" in outcome["reason"]
    assert "root_volume_gb" in outcome["hint"]
    assert "root_volume_gb" in second.stderr


def test_progress_lines_reach_heartbeat_and_outcome(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    script = (
        "echo 'grid-resume: progress 4/10'; printf 'grid-resume: progress 5/10\\rgrid-resume: progress 6/10\\n' >&2;"
        " sleep 3; echo 'grid-resume: progress 7/10'"
    )
    proc = agent(run_uri, tmp_path / "w", "sh", "-c", script, options=[*FAST, "--heartbeat-interval", "0.5"])
    beat = wait_for(
        lambda: (hb := heartbeat_of(ledger, 1)) and (hb.get("progress") or {}).get("done") == 6 and hb,
        timeout=10,
        what="the latest progress in a beat",
    )
    started = time.time() - 15
    seen = beat["progress"]
    assert {k: seen[k] for k in ("done", "total", "first")} == {"done": 6, "total": 10, "first": 4}
    assert started < seen["first_at"] <= seen["done_at"] and beat["state"] == "running"  # the run's pace (deadline=)
    assert proc.wait() == 0
    ended = outcome_of(ledger, 1)["progress"]
    assert {k: ended[k] for k in ("first", "last", "total")} == {"first": 4, "last": 7, "total": 10}
    assert ended["last_at"] - ended["first_at"] >= 2.5  # the sleep 3 between the 4th and the 7th step
    # Every document the agent writes is its typed record, with its format and no field the record does not know.
    for cls in (records.SessionStart, records.Heartbeat, records.Outcome, records.Lease):
        record = ledger.read_record(cls, 1)
        assert record is not None and record.extra == {}, (cls.__name__, record)
        assert ledger.get_json(ledger.key(records.record_key(cls, 1))).get("format") == cls.format(), cls
    assert ledger.read_record(records.Outcome, 1).progress == ended


def test_no_progress_lines_no_progress_field(agent, run_uri: str, ledger: RunLedger, tmp_path: Path) -> None:
    proc = agent(run_uri, tmp_path / "w", "sh", "-c", "echo step 3 of 10", options=FAST)
    assert proc.wait() == 0
    assert "progress" not in outcome_of(ledger, 1)
    assert "progress" not in heartbeat_of(ledger, 1)


def test_keep_manifests_bounds_a_sessions_own_checkpoints(agent, ledger: RunLedger, tmp_path: Path) -> None:
    """``--keep-manifests 2``: of the checkpoints a session commits, only its newest two stay, and the
    run restores from the last one."""
    run = f"s3://{ledger.location.bucket}/{ledger.location.prefix}"
    proc = agent(
        run, tmp_path / "w", *train(40, 0.05), options=[*FAST, "--sync-interval", "0.2", "--keep-manifests", "2"]
    )
    assert proc.wait() == 0
    committed = set(re.findall(r"sync: manifest (000001-\d{6}\.json)", proc.stderr))
    names = [m.name for m in ledger.list_manifests() if m.session == 1]
    assert len(committed) > 2 and len(names) == 2 and set(names) < committed, (committed, names, proc.stderr[-2000:])
    assert outcome_of(ledger, 1)["manifest"] == names[0]


def test_a_rerun_on_the_same_workdir_keeps_newer_local_files(agent, run_uri, ledger: RunLedger, tmp_path: Path) -> None:
    """Session 2 on session 1's disk (a stop/start, a rerun on a workstation): ten files changed
    since session 1's checkpoint survive, set aside where the log and the outcome say, and reach S3
    with session 2's sync; files the checkpoint does not have are left as they are."""
    workdir = tmp_path / "disk"
    (workdir / "ckpt").mkdir(parents=True)
    names = [f"ckpt/step-{i}.pt" for i in range(8)] + ["big.bin", "notes.txt"]
    for i, name in enumerate(names):
        (workdir / name).write_bytes(os.urandom(3 * 1024 * 1024 if name == "big.bin" else 100 + i))
    for i in range(20):
        (workdir / f"same-{i}.txt").write_text(f"unchanged {i}")
    assert agent(run_uri, workdir, "true", options=FAST).wait() == 0
    assert outcome_of(ledger, 1)["status"] == "succeeded" and "set_aside" not in outcome_of(ledger, 1)
    checkpoint = {name: (workdir / name).read_bytes() for name in names}
    newer = {}
    for name in names:  # newer work after the checkpoint; notes.txt keeps its size (only the bytes tell)
        newer[name] = os.urandom(len(checkpoint[name])) if name == "notes.txt" else os.urandom(200 + len(name))
        (workdir / name).write_bytes(newer[name])
    (workdir / "ckpt" / "untracked.pt").write_bytes(b"not in the checkpoint")
    untracked_stat = (workdir / "ckpt" / "untracked.pt").stat()
    same_inode = (workdir / "same-3.txt").stat().st_ino

    second = agent(run_uri, workdir, "true", options=FAST)
    assert second.wait() == 0
    outcome = outcome_of(ledger, 2)
    assert outcome["status"] == "succeeded", outcome
    kept = ".grid-resume-kept/session-2"
    assert outcome["set_aside"] == {"count": 10, "dirs": [kept], "paths": sorted(names)}, outcome
    log = second.stdout + second.stderr
    assert f"10 local path(s) differed from the checkpoint and were set aside under {kept}" in log
    for name in names:
        assert (workdir / kept / name).read_bytes() == newer[name]  # the newer version, exact bytes
        assert (workdir / name).read_bytes() == checkpoint[name]  # the checkpoint's, as the script expects
    assert (workdir / "ckpt" / "untracked.pt").read_bytes() == b"not in the checkpoint"
    assert (workdir / "ckpt" / "untracked.pt").stat().st_mtime_ns == untracked_stat.st_mtime_ns
    assert (workdir / "same-3.txt").stat().st_ino == same_inode  # identical files untouched

    # Session 2's checkpoint holds the newer versions: a fresh instance gets them back from S3.
    fresh = tmp_path / "fresh"
    Restorer(ledger, str(fresh)).restore()
    for name in names:
        assert (fresh / kept / name).read_bytes() == newer[name]
        assert (fresh / name).read_bytes() == checkpoint[name]
    assert (fresh / "ckpt" / "untracked.pt").read_bytes() == b"not in the checkpoint"


def test_odd_names_survive_a_resume_through_the_agent(agent, run_uri, ledger, tmp_path: Path) -> None:
    """``1:30.log``, ``a\\b.txt``, tab, CR, non-UTF-8, 255-byte names, a deep path: the next session
    restores them bit-exact (an older agent committed them, then refused every manifest holding them)."""
    first_dir, second_dir = tmp_path / "i1", tmp_path / "i2"
    make_odd_tree(first_dir)
    first = agent(run_uri, first_dir, "true", options=FAST)
    assert first.wait() == 0, first.stderr
    second = agent(run_uri, second_dir, "true", options=FAST)
    assert second.wait() == 0, second.stderr
    assert outcome_of(ledger, 2)["restored_from"] == "000001-000001.json"
    assert outcome_of(ledger, 2)["restore_fallbacks"] == []
    assert bytes_snapshot(second_dir) == bytes_snapshot(first_dir)


def test_a_fallback_is_reported_with_the_steps_it_costs(agent, run_uri, ledger, tmp_path: Path) -> None:
    """The newest checkpoint does not verify: the session restores the older one and says so, with the
    steps to redo, in its log and its outcome: never a silent restart from an older point."""
    one = agent(run_uri, tmp_path / "i1", "sh", "-c", "echo 'grid-resume: progress 10'; echo a > ckpt", options=FAST)
    assert one.wait() == 0, one.stderr
    two = agent(run_uri, tmp_path / "i2", "sh", "-c", "echo 'grid-resume: progress 25'; echo bb > ckpt", options=FAST)
    assert two.wait() == 0, two.stderr
    newest = ledger.read_manifest(ledger.list_manifests()[0])
    assert newest.name == "000002-000001.json" and newest.extra == {"progress": {"done": 25}}
    ledger.put(ledger.blob_keys(next(f for f in newest.files if f.path == "ckpt"))[0], b"rotten!")
    three = agent(run_uri, tmp_path / "i3", "cat", "ckpt", options=FAST)
    assert three.wait() == 0, three.stderr
    assert three.stdout.strip().endswith("a")
    outcome = outcome_of(ledger, 3)
    assert outcome["restored_from"] == "000001-000001.json"
    assert outcome["restore_fallback"] == {
        "newest": "000002-000001.json",
        "restored": "000001-000001.json",
        "newest_step": 25,
        "restored_step": 10,
        "steps_lost": 15,
    }
    note = "restored the older checkpoint 000001-000001.json instead: about 15 steps (step 25 -> 10)"
    assert note in outcome["warnings"][0] and "000002-000001.json" in outcome["warnings"][0]
    assert note in three.stderr


SLOW_SAVE = str(Path(__file__).resolve().parents[1] / "scripts" / "slow_save.py")
GROUP_SHAPES = {
    "source-then-train": "source {env} && python3 {trainer}",
    "train-then-echo": "python3 {trainer} && echo trained",
    "train-into-tee": "python3 {trainer} | tee train.log",
    # the user guide's way to keep a pipe: its reader ignores SIGTERM and ends when the trainer does
    "train-into-tee-ignoring-sigterm": "python3 {trainer} | (trap '' TERM; exec tee train.log)",
}


@pytest.mark.parametrize("shape", GROUP_SHAPES)
def test_a_shell_that_dies_of_sigterm_leaves_the_trainer_the_notice_to_save(
    agent, run_uri: str, ledger: RunLedger, tmp_path: Path, shape: str
) -> None:
    """bash does not exec the trainer in these shapes: it dies of the SIGTERM at once. The trainer, still
    in the group, must keep the notice's time (8 s, its save takes 3 s), not --min-grace (1 s): the
    checkpoint it writes on SIGTERM reaches S3 and the next session resumes from it."""
    # bash 5.2 execs the last command of "source x && cmd" unless it has more to do: here an EXIT trap, as an
    # environment script that cleans up after itself sets (bash 4.2, Amazon Linux 2's, never execs it).
    env = tmp_path / "env.sh"
    env.write_text('export SCRATCH="$(mktemp -d)"\ntrap \'rm -rf "$SCRATCH"\' EXIT\n')
    command = GROUP_SHAPES[shape].format(env=env, trainer=f"{SLOW_SAVE} 100000 0.05 3")
    with MetadataService() as imds:
        proc = agent(run_uri, tmp_path / "i1", "bash", "-c", command, options=FAST, imds=imds)
        wait_for(lambda: "step 8\n" in proc.stdout, what="training progress")
        imds.schedule_notice(in_seconds=8)
        assert proc.wait() == 0
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted", outcome
    printed = max(int(n) for n in re.findall(r"^step (\d+)$", proc.stdout, re.MULTILINE))
    final = ledger.read_manifest(ledger.list_manifests()[-1])
    assert final.reason == "final" and "ckpt.json" in [f.path for f in final.files]
    if shape != "train-into-tee":  # the trainer's lines after its shell died still reach the task log
        # and its exit 0 is the command's, not the shell's 143
        assert (outcome["exit_code"], outcome["clean"]) == (0, True), outcome
        assert f"saved at step {printed}" in proc.stdout
        assert f"saved at step {printed}".encode() in ledger.read_log(1, 0)[0]
    resumed = agent(run_uri, tmp_path / "i2", "python3", SLOW_SAVE, "0", "0", "0", options=FAST)
    assert resumed.wait() == 0
    start = int(re.search(r"session 2 starts at step (\d+)", resumed.stdout).group(1))
    assert start >= printed > 0  # no step lost: the session's own save was restored


def test_a_lease_left_by_a_reclaimed_session_is_taken_over(agent, run_uri: str, ledger: RunLedger, tmp_path) -> None:
    """Session 1's instance was reclaimed after its outcome was written but before its lease was released:
    the lease still says "held" for minutes. Session 2 takes it over at once and restores session 1's work."""
    first = agent(run_uri, tmp_path / "a", "sh", "-c", "echo saved-by-one > state.txt", options=["--session", "1"])
    assert first.wait() == 0 and outcome_of(ledger, 1)["status"] == "succeeded"
    left = ledger.read_record(records.Lease)
    assert left is not None and left.released  # the agent released it; the reclaim undoes that:
    ledger.write_record(
        records.Lease(
            agent_id=left.agent_id, session=1, host=left.host, renewed_at=time.time(), expires_at=time.time() + 600
        ),
        if_match=ledger.get_with_etag(ledger.key("lease.json"))[1],
    )
    second = agent(run_uri, tmp_path / "b", "sh", "-c", "cat state.txt > seen.txt", options=["--session", "2"])
    assert second.wait() == 0, second.stderr
    assert (tmp_path / "b" / "seen.txt").read_text() == "saved-by-one\n"
    assert outcome_of(ledger, 2)["status"] == "succeeded"
    assert "session 1 has ended (its outcome is written) without releasing it" in second.stderr


def test_a_live_lease_refuses_and_says_so_in_the_outcome(agent, run_uri: str, ledger: RunLedger, tmp_path) -> None:
    """The Airflow side's next session meets a live holder: it runs nothing, exits 3, and its outcome says
    whose lease held it, so the watch does not read a boot failure."""
    first = agent(run_uri, tmp_path / "a", *train(60, 0.05), options=[*FAST, "--session", "1"])
    wait_for(lambda: "step 3" in first.stdout, what="first agent running")
    second = agent(run_uri, tmp_path / "b", "sh", "-c", "echo should-not-run > ran", options=["--session", "2"])
    assert second.wait() == 3
    assert not (tmp_path / "b" / "ran").exists()
    outcome = outcome_of(ledger, 2)
    assert outcome is not None, second.stderr
    assert outcome["reason"] == "lease held by session 1: nothing was run"
    assert (outcome["status"], outcome["agent_exit_code"], outcome["lease_held_by"]) == ("interrupted", 3, 1)
    assert first.wait() == 0 and outcome_of(ledger, 1)["status"] == "succeeded"
