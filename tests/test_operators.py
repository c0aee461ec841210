"""GridRunOperator with dag.test() against the local spot cloud: real agents on emulated instances."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from tests.conftest import OPERATOR_ARGS, TRAIN, command_started, make_dag, outcome_of


@pytest.fixture
def training_dir(tmp_path: Path) -> Path:
    workdir = tmp_path / "training"
    workdir.mkdir()
    shutil.copy(TRAIN, workdir / "train.py")
    return workdir


def reference_result(tmp_path: Path, steps: int = 80) -> str:
    ref = tmp_path / f"reference-{steps}"
    ref.mkdir(exist_ok=True)
    subprocess.run([sys.executable, TRAIN, str(steps), "0.0"], cwd=ref, check=True, capture_output=True)
    return (ref / "result.txt").read_text()


def run_ledger(bucket: str) -> RunLedger:
    client = make_s3_client()
    runs = {
        o["Key"].rsplit("/spec.json", 1)[0]
        for o in client.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].endswith("/spec.json")
    }
    assert len(runs) == 1, runs
    return RunLedger(client, parse_s3_uri(f"s3://{bucket}/{runs.pop()}"))


def result_of(ledger: RunLedger, tmp_path: Path) -> str:
    from airflow_grid_resume.agent.restore import Restorer

    out = tmp_path / f"restored-{uuid.uuid4().hex[:6]}"
    Restorer(ledger, str(out)).restore()
    return (out / "result.txt").read_text()


def summary_of(dagrun) -> dict:
    """The task's XCom return value, read from the metadata DB as the UI and downstream tasks see it."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dagrun.run_id, key="return_value", task_ids="train", dag_ids=dagrun.dag_id)
        ).first()
        return XComModel.deserialize_value(row)


LOGICAL = datetime(2026, 3, 1, tzinfo=timezone.utc)
# A run nothing interrupts needs no long training: 20 steps of 0.05 s.
QUICK_STEPS = 20
QUICK = f"python3 train.py {QUICK_STEPS} 0.05"


def test_a_run_without_interruption_and_clearing_it_reports_the_finished_run(
    spot_cloud, training_dir: Path, tmp_path: Path, capfd
) -> None:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    dag = make_dag(f"grid_plain_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, command=QUICK)
    dagrun = dag.test(logical_date=LOGICAL, run_after=LOGICAL)
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    assert ledger.list_sessions() == [1]
    assert outcome_of(ledger, 1)["status"] == "succeeded"
    # Every document either side wrote is its typed record, with its format and no field the record does not know
    # (the deadline policy's records are written by deadline= runs only: tests/system/test_deadline_run.py).
    assert ledger.read_record(records.Deadline) is None and ledger.read_record(records.Decision, 1) is None
    for cls in (c for c in records.ALL if c not in (records.Deadline, records.Decision)):
        session = None if cls in records.RUN_RECORDS else 1
        record = ledger.read_record(cls, session)
        assert record is not None and record.extra == {}, (cls.__name__, record)
        assert ledger.get_json(ledger.key(records.record_key(cls, session))).get("format") == cls.format(), cls
    assert ledger.read_final().status == "succeeded" and ledger.read_closed(1).status == "succeeded"
    assert result_of(ledger, tmp_path) == reference_result(tmp_path, QUICK_STEPS)
    summary = summary_of(dagrun)
    assert (summary["sessions"], summary["interruptions"], summary["failures"]) == (1, 0, 0)
    assert summary["final_outcome"] == "succeeded" and summary["last_manifest"]
    assert summary["spot_seconds"] > 1 and summary["on_demand_seconds"] == 0
    assert 0 < summary["estimated_cost_usd"] < summary["on_demand_cost_usd"]  # moto's spot price < g5 list price
    capfd.readouterr()
    # Clearing the succeeded task (rerun="resume", the default) reports the finished run: no new instance.
    before = len(spot_cloud.instances())
    again = dag.test(logical_date=LOGICAL, run_after=LOGICAL)
    assert again.state == "success" and again.run_id == dagrun.run_id
    assert "already succeeded in session 1" in capfd.readouterr().out
    assert len(spot_cloud.instances()) == before and ledger.list_sessions() == [1]
    assert summary_of(again)["sessions"] == 1
    assert summary_of(again)["last_manifest"] == summary["last_manifest"]  # the final checkpoint, not the snapshot


def test_clearing_a_finished_run_with_rerun_fresh_starts_over(spot_cloud, training_dir, tmp_path, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(f"grid_fresh_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, rerun="fresh", command=QUICK)
    first = dag.test(logical_date=LOGICAL, run_after=LOGICAL)
    assert first.state == "success"
    capfd.readouterr()
    second = dag.test(logical_date=LOGICAL, run_after=LOGICAL)
    assert second.state == "success"
    assert "rerun='fresh': starting over" in capfd.readouterr().out
    summary = summary_of(second)
    assert summary["run_uri"].endswith("/rerun-2") and summary["sessions"] == 1
    fresh = RunLedger(make_s3_client(), parse_s3_uri(summary["run_uri"]))
    assert outcome_of(fresh, 1)["status"] == "succeeded"
    assert result_of(fresh, tmp_path) == reference_result(tmp_path, QUICK_STEPS)
    # the first run is kept as it was
    first_run = RunLedger(make_s3_client(), parse_s3_uri(summary["run_uri"].rsplit("/rerun-2", 1)[0]))
    assert first_run.list_sessions() == [1] and outcome_of(first_run, 1)["status"] == "succeeded"


def test_two_interruptions_resume_to_the_same_result(spot_cloud, training_dir: Path, tmp_path: Path) -> None:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    interrupted, stop = chaos(spot_cloud, times=2, notice=True, after=1.0)
    alerts: list[str] = []
    try:
        dag = make_dag(
            f"grid_chaos_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            max_interruptions=3,
            # An interruption must not wait the user's retry_delay (the test would take hours) nor
            # look like a failure to alerting: on_retry_callback is for script failures only.
            retry_delay=timedelta(hours=1),
            on_retry_callback=lambda context: alerts.append("retry"),
            on_interruption_callback=lambda context: alerts.append("interruption"),
        )
        dagrun = dag.test()
    finally:
        stop.set()
    assert len(interrupted) == 2
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    statuses = [outcome_of(ledger, s)["status"] for s in ledger.list_sessions()]
    assert statuses == ["interrupted", "interrupted", "succeeded"]  # no failure retry spent (retries=0)
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)
    assert alerts == ["interruption", "interruption"]
    summary = summary_of(dagrun)
    assert (summary["sessions"], summary["interruptions"], summary["failures"]) == (3, 2, 0)
    assert [d["status"] for d in summary["session_details"]] == statuses
    assert len({d["instance_id"] for d in summary["session_details"]}) == 3


STRICT_OPTIONS = {"s3_encryption": "aws:kms", "s3_kms_key_id": "alias/training", "s3_checksum": "CRC32"}


def test_a_run_on_a_strict_bucket_resumes_after_an_interruption(spot_cloud, training_dir, tmp_path) -> None:
    """A bucket whose policy denies uploads without SSE-KMS, with Object Lock (a checksum on every upload)
    and versioning: the agent, the bootstrap, the operator and both triggers write only as it allows."""
    bucket = new_bucket()
    spot_cloud.make_strict(bucket)
    interrupted, stop = chaos(spot_cloud, times=1, notice=True, after=1.0)
    try:
        dag = make_dag(f"grid_strict_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, **STRICT_OPTIONS)
        dagrun = dag.test()
    finally:
        stop.set()
    assert len(interrupted) == 1 and dagrun.state == "success"
    ledger = run_ledger(bucket)
    assert [outcome_of(ledger, s)["status"] for s in ledger.list_sessions()] == ["interrupted", "succeeded"]
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    names = {key.rsplit("/", 1)[-1] for key in keys}
    # the operator's, the bootstrap's, the agent's and the triggers' (fast path) writes are all there
    assert {"spec.json", "grid-resume-agent.pyz", "boot.json", "heartbeat.json", "launch-attempt.json"} <= names
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/training"), key
    assert spot_cloud.state()["bucket_rules"]["refused"] == 0  # no write was ever refused, then retried
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) > len(keys)  # versioning kept overwrites


def test_a_strict_bucket_without_the_option_fails_at_the_first_write_naming_it(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    spot_cloud.set_bucket_rules(bucket, require_encryption="aws:kms")
    before, refused = len(spot_cloud.instances()), spot_cloud.state()["bucket_rules"]["refused"]
    dag = make_dag(f"grid_unencrypted_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=2)
    assert dag.test().state == "failed"
    out = capfd.readouterr().out
    assert "was refused (AccessDenied" in out and "set s3_encryption='aws:kms'" in out
    assert len(spot_cloud.instances()) == before  # nothing launched: the run stopped at its first write
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket)  # and nothing was written
    assert spot_cloud.state()["bucket_rules"]["refused"] == refused + 1  # one try: retries=2 cannot help


def new_bucket() -> str:
    bucket = f"op-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def chaos(
    cloud: LocalSpotCloud, *, times: int, notice: bool, after: float = 1.5, instance_type: str | None = None
) -> tuple[list[str], threading.Event]:
    """Interrupt the next ``times`` instances (of ``instance_type``) once each has run its command for ``after``
    seconds (counted from the agent starting it, so a slow boot on a busy machine changes nothing)."""
    interrupted: list[str] = []
    stop = threading.Event()
    started: dict[str, float] = {}

    def loop() -> None:
        while not stop.is_set() and len(interrupted) < times:
            for instance in cloud.instances():
                instance_id = instance["instance_id"]
                if instance["state"] != "running" or instance_id in interrupted:
                    continue
                if instance_type not in (None, instance["instance_type"]):
                    continue
                if instance_id not in started and command_started(instance):
                    started[instance_id] = time.monotonic()
                if instance_id in started and time.monotonic() - started[instance_id] > after:
                    cloud.interrupt(instance_id, notice=notice)
                    interrupted.append(instance_id)
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True).start()
    return interrupted, stop


def test_script_failure_is_retried_then_fails_naming_the_budget(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    alerts: list[str] = []
    dag_id = f"grid_fail_{uuid.uuid4().hex[:6]}"
    dag = make_dag(
        dag_id,
        training_dir,
        bucket,
        retries=1,
        command="echo 'CUDA out of memory' >&2; exit 3",
        on_retry_callback=lambda context: alerts.append("retry"),
        on_interruption_callback=lambda context: alerts.append("interruption"),
    )
    assert dag.test(logical_date=LOGICAL, run_after=LOGICAL).state == "failed"
    ledger = run_ledger(bucket)
    assert [outcome_of(ledger, s)["status"] for s in ledger.list_sessions()] == ["failed", "failed"]
    out = capfd.readouterr().out
    assert "script failure budget exhausted: 2 failures > retries=1" in out
    assert "CUDA out of memory" in out
    assert alerts == ["retry"]  # the failure that was retried alerts like any Airflow retry
    # The user fixes the command and clears the task: the failed run resumes from its last
    # checkpoint (rerun="resume") with fresh budgets, and trains to the end.
    fixed = make_dag(dag_id, training_dir, bucket, retries=0, command="python3 train.py 40 0.05")
    assert fixed.test(logical_date=LOGICAL, run_after=LOGICAL).state == "success"
    out = capfd.readouterr().out
    assert "resuming from its last checkpoint with fresh budgets" in out
    assert "the command changed since the last session" in out
    assert [outcome_of(ledger, s)["status"] for s in ledger.list_sessions()] == ["failed", "failed", "succeeded"]


def test_interruption_budget_exhausted(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    _, stop = chaos(spot_cloud, times=5, notice=True)
    try:
        dag = make_dag(
            f"grid_budget_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            max_interruptions=1,
            command="python3 train.py 400 0.05",
        )
        assert dag.test().state == "failed"
    finally:
        stop.set()
    assert "interruption budget exhausted: 2 interruptions > max_interruptions=1" in capfd.readouterr().out
    ledger = run_ledger(bucket)
    assert [outcome_of(ledger, s)["status"] for s in ledger.list_sessions()] == ["interrupted", "interrupted"]


def test_lost_instance_resumes_from_the_last_checkpoint(spot_cloud, training_dir, tmp_path) -> None:
    bucket = new_bucket()
    interrupted, stop = chaos(spot_cloud, times=1, notice=False, after=2.5)
    try:
        dag = make_dag(
            f"grid_lost_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            retries=0,
            heartbeat_timeout=3,
            agent_args=["--heartbeat-interval", "1", "--log-interval", "0.5", "--sync-interval", "1"],
        )
        assert dag.test().state == "success"
    finally:
        stop.set()
    assert len(interrupted) == 1
    ledger = run_ledger(bucket)
    assert outcome_of(ledger, 1) is None  # a hard loss: the agent never wrote an outcome
    assert outcome_of(ledger, 2)["status"] == "succeeded"
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)


def test_max_run_terminates_the_instance(spot_cloud, training_dir, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(
        f"grid_maxrun_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=2, max_run=4, command="sleep 300"
    )
    before = {i["instance_id"] for i in spot_cloud.instances()}
    assert dag.test().state == "failed"
    assert "max_run (4 s) reached in session 1" in capfd.readouterr().out
    mine = [i for i in spot_cloud.instances() if i["instance_id"] not in before]
    assert len(mine) == 1
    wait = time.monotonic() + 10
    while spot_cloud.instance(mine[0]["instance_id"])["state"] != "terminated" and time.monotonic() < wait:
        time.sleep(0.2)
    assert spot_cloud.instance(mine[0]["instance_id"])["state"] == "terminated"


def test_capacity_withheld_then_released(spot_cloud, training_dir, tmp_path, capfd) -> None:
    bucket = new_bucket()
    dag = make_dag(f"grid_drought_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, command=QUICK)
    # Withheld until the capacity trigger has backed off once (a drought of fixed seconds could end before the
    # trigger's first round on a busy machine, and then no wait would be seen).
    spot_cloud.set_capacity("*", "*", available=False)
    done = threading.Event()

    def release_after_a_refusal() -> None:
        client = make_s3_client()
        while not done.is_set():
            listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
            keys = [o["Key"] for o in listed if o["Key"].endswith("/launch-attempt.json")]
            phases = [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
            if any(b'"backing-off"' in phase for phase in phases):
                break
            time.sleep(0.3)
        spot_cloud.set_capacity("*", "*", available=True, market="all")

    releaser = threading.Thread(target=release_after_a_refusal, daemon=True)
    releaser.start()
    try:
        assert dag.test().state == "success"
    finally:
        done.set()
        releaser.join(timeout=10)
        spot_cloud.set_capacity("*", "*", available=True, market="all")
    out = capfd.readouterr().out
    assert "no capacity at once: g5.xlarge in" in out  # the worker's first round
    assert re.search(r"capacity wait: no spot capacity for \S+ in ", out)  # the trigger's rounds, replayed
    assert re.search(r"session 1: waited \d+ s for capacity over \d+ rounds", out)  # kept in the task's own log
    assert result_of(run_ledger(bucket), tmp_path) == reference_result(tmp_path, QUICK_STEPS)


def test_parameters_are_validated_with_their_names() -> None:
    from airflow_grid_resume.operators import GridRunOperator

    base = OPERATOR_ARGS
    cases = [
        ({"artifacts_uri": "/local/path"}, "artifacts_uri"),
        ({"command": "  "}, "command"),
        ({"instance_types": []}, "instance_types"),
        ({"max_interruptions": -1}, "max_interruptions"),
        ({"max_run": -5}, "max_run"),
        ({"capacity_wait": timedelta(0)}, "capacity_wait"),
        ({"image_id": "ubuntu-22"}, "image_id"),
        ({"s3_encryption": "kms"}, "s3_encryption must be one of AES256, aws:kms"),
        ({"s3_kms_key_id": "alias/k"}, "s3_kms_key_id is only used with s3_encryption='aws:kms'"),
        ({"s3_checksum": "MD5"}, "s3_checksum must be one of CRC32, SHA256"),
    ]
    for change, name in cases:
        with pytest.raises(ValueError, match=name):
            GridRunOperator(**{**base, **change})


def crash_before_defer_operator() -> type:
    from airflow_grid_resume.operators import GridRunOperator

    class CrashBeforeDefer(GridRunOperator):
        """Its first try dies on the worker after the launch, before deferring to the run trigger."""

        def _watch(self, context: Any, run_uri: str, session: int, instance_id: str, state: dict) -> None:
            if context["ti"].try_number == 1:
                raise RuntimeError(f"worker died after launching {instance_id}, before deferring")
            return super()._watch(context, run_uri, session, instance_id, state)

    return CrashBeforeDefer


def test_a_worker_crash_between_launch_and_defer_reattaches(spot_cloud, training_dir, tmp_path, capfd) -> None:
    bucket = new_bucket()
    before = {i["instance_id"] for i in spot_cloud.instances()}
    dag = make_dag(
        f"grid_crash_{uuid.uuid4().hex[:6]}", training_dir, bucket, operator_class=crash_before_defer_operator()
    )
    dagrun = dag.test()
    assert dagrun.state == "success"
    out = capfd.readouterr().out
    assert "worker died after launching" in out
    assert "reattaching to session 1 on instance" in out
    mine = [i for i in spot_cloud.instances() if i["instance_id"] not in before]
    assert len(mine) == 1, mine  # the task state store led the next try back to it: no second instance
    ledger = run_ledger(bucket)
    assert ledger.list_sessions() == [1] and outcome_of(ledger, 1)["status"] == "succeeded"
    assert result_of(ledger, tmp_path) == reference_result(tmp_path)


def test_a_worker_dying_after_its_verdict_still_spends_the_budget_once(
    spot_cloud, training_dir, capfd, monkeypatch
) -> None:
    """The try that sees the interruption exhaust the budget records its verdict (closed.json) and dies before
    failing the run: the retry Airflow gives the dead worker must fail the run too, not launch session 2."""
    from airflow_grid_resume import operators
    from airflow_grid_resume.operators import GridRunOperator

    dying = {"now": False}

    class DiesAfterItsVerdict(GridRunOperator):
        def execute(self, context: Any) -> Any:
            dying["now"] = False  # a new try: a new worker
            return super().execute(context)

        def on_session_end(self, context: Any, event: dict | None = None) -> Any:
            dying["now"] = context["ti"].try_number == 1
            return super().on_session_end(context, event)

    def budget_history(ledger: RunLedger, before: int) -> tuple[int, int]:  # read right after closed.json
        if dying["now"]:
            raise RuntimeError("worker died after recording its verdict")
        return real_history(ledger, before)

    real_history = operators.budget_history
    monkeypatch.setattr(operators, "budget_history", budget_history)
    bucket = new_bucket()
    before = {i["instance_id"] for i in spot_cloud.instances()}
    _, stop = chaos(spot_cloud, times=1, notice=True)
    try:
        dag = make_dag(
            f"grid_verdict_{uuid.uuid4().hex[:6]}",
            training_dir,
            bucket,
            operator_class=DiesAfterItsVerdict,
            retries=1,  # one failure allowed: Airflow retries the dead worker's try
            max_interruptions=0,
            command="python3 train.py 400 0.05",
        )
        assert dag.test().state == "failed"
    finally:
        stop.set()
    out = capfd.readouterr().out
    assert "worker died after recording its verdict" in out
    assert "interruption budget exhausted: 1 interruptions > max_interruptions=0 (session 1 was interrupted)" in out
    ledger = run_ledger(bucket)
    assert ledger.list_sessions() == [1] and ledger.read_closed(1).status == "interrupted"
    assert ledger.read_final().status == "failed" and ledger.read_final().session == 1  # a clear gets fresh budgets
    assert len([i for i in spot_cloud.instances() if i["instance_id"] not in before]) == 1


def test_extra_links_point_at_the_instance_and_the_artifacts(spot_cloud, training_dir) -> None:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from airflow_grid_resume.links import GridArtifactsLink, GridInstanceLink

    bucket = new_bucket()
    dag = make_dag(f"grid_links_{uuid.uuid4().hex[:6]}", training_dir, bucket, retries=0, command="true")
    dagrun = dag.test()
    assert dagrun.state == "success"
    ledger = run_ledger(bucket)
    instance_id = summary_of(dagrun)["session_details"][0]["instance_id"]
    with create_session() as session:
        # what the api-server does for the UI: the serialized task renders the links from XCom
        task = SerializedDagModel.get_dag(dag.dag_id, session=session).get_task("train")
        ti = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=dagrun.run_id, task_id="train").one()
        instance_url = task.get_extra_links(ti, GridInstanceLink.name)
        artifacts_url = task.get_extra_links(ti, GridArtifactsLink.name)
    # On the local spot cloud the links open the pages it serves (the AWS console cannot show it).
    assert instance_url == f"{spot_cloud.endpoint_url}/_emulator/pages/instances/{instance_id}"
    prefix = urllib.parse.quote(f"{ledger.location.prefix}/", safe="")
    assert artifacts_url == f"{spot_cloud.endpoint_url}/_emulator/pages/ledger?bucket={bucket}&prefix={prefix}"
    with urllib.request.urlopen(instance_url, timeout=10) as resp:
        page = resp.read().decode()
    assert instance_id in page and "terminated" in page
    with urllib.request.urlopen(artifacts_url, timeout=10) as resp:
        page = resp.read().decode()
    assert "spec.json" in page and "sessions/000001/outcome.json" in page
