"""Shared fixtures: moto's server over HTTP, a bucket per test, the metadata emulator, agent runs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.emulator.imds import MetadataService
from airflow_grid_resume.emulator.moto_server import MotoServer
from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri

SCRIPTS = Path(__file__).parent / "scripts"
TRAIN = str(SCRIPTS / "train.py")
# The fewest valid GridRunOperator arguments, for tests of its parameters (no I/O happens at construction).
OPERATOR_ARGS = dict(
    task_id="t",
    command="python train.py",
    artifacts_uri="s3://b/runs",
    instance_types=["g5.xlarge"],
    image_id="ami-1",
    subnet_ids=["subnet-1"],
)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Airflow reads its home at import: give the test session its own, before anything imports it. Each
    xdist worker gets its own too (it inherits the controller's environment, so its home must be replaced,
    not defaulted): two workers migrating or running dag.test on one SQLite file fail with "database is locked"."""
    home = config._tmp_path_factory.mktemp("airflow-home")  # type: ignore[attr-defined]
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


# The files that take a minute or more (real Airflow components, the browser, the seeded chaos, the operator's
# dag.test runs), longest first. make test hands whole files to two xdist workers in collection order
# (--dist loadfile), so starting these first lets both workers finish together instead of one waiting on a long tail.
LONGEST_FILES = (
    "test_operators.py",
    "verify/test_verify.py",
    "system/test_real_airflow_ha.py",
    "agent/test_supervisor.py",
    "triggers/test_spot_cloud.py",
    "system/test_chaos.py",
    "ui/test_browser.py",
    "test_user_guide.py",
    "system/test_real_airflow.py",
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest files first (a stable sort: the order within a file is kept)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(TESTS).as_posix(), len(rank)))


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The test session's Airflow metadata DB, migrated once (dag.test needs one)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for boto3 in this process and in agent subprocesses: moto, fake keys."""
    env = {
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def bucket(aws_env: dict[str, str]) -> str:
    name = f"grid-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def run_uri(bucket: str) -> str:
    return f"s3://{bucket}/runs/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ledger(run_uri: str) -> RunLedger:
    return RunLedger(make_s3_client(), parse_s3_uri(run_uri))


@pytest.fixture
def imds() -> Iterator[MetadataService]:
    with MetadataService() as service:
        yield service


class AgentProcess:
    """An agent started as a real subprocess; output captured to files for assertions."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.stdout_path = logdir / f"agent-{uuid.uuid4().hex[:6]}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 (closed in wait())
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_grid_resume.agent", *args],
            stdout=self._out,
            stderr=self._err,
            env=env,
        )

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._out.close()
                self._err.close()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agent(aws_env: dict[str, str], tmp_path: Path):
    """``agent(run_uri, workdir, *command, options=[...])`` starts an agent process."""
    started: list[AgentProcess] = []

    def start(
        run_uri: str,
        workdir: Path | str,
        *command: str,
        options: list[str] | None = None,
        imds: MetadataService | None = None,
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        opts = list(options or [])
        opts += ["--imds-endpoint", imds.url] if imds else ["--no-imds"]
        # An agent killed on purpose cannot remove its state dir: keep it under the test's tmp_path.
        full_env = {**os.environ, **aws_env, "TMPDIR": str(tmp_path), **(env or {})}
        proc = AgentProcess(
            ["--run-uri", run_uri, "--workdir", str(workdir), "--heartbeat-interval", "1", *opts, "--", *command],
            full_env,
            tmp_path,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


AMI = "ami-03cf127a"  # one of the AMIs moto ships with


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalSpotCloud]:
    """The local spot cloud (1 s notices), one per test module (a module that needs another defines its own)."""
    with LocalSpotCloud(notice_seconds=1) as c:
        yield c


def cloud_bucket(cloud: LocalSpotCloud, monkeypatch: pytest.MonkeyPatch, prefix: str) -> str:
    """Point boto3 in this process at ``cloud`` for one test (its S3 carries out conditional writes atomically, as
    S3 does, which moto's server alone does not) and make a fresh bucket there: its name."""
    for key, value in cloud.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def spot_cloud(airflow_db):
    """The local spot cloud (3 s notices) for a test module, with boto3 pointed at it."""
    with LocalSpotCloud(notice_seconds=3) as cloud:
        saved = {k: os.environ.get(k) for k in cloud.aws_env()}
        os.environ.update(cloud.aws_env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        yield cloud
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_dag(dag_id: str, workdir: Path, bucket: str, operator_class: type | None = None, **op_kwargs):
    from airflow.sdk import DAG

    from airflow_grid_resume.operators import GridRunOperator

    operator_class = operator_class or GridRunOperator

    subnets = sorted(boto3.client("ec2").describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
        operator_class(
            task_id="train",
            command=op_kwargs.pop("command", "python3 train.py 80 0.05"),
            workdir=str(workdir),
            artifacts_uri=f"s3://{bucket}/grid-runs/",
            instance_types=op_kwargs.pop("instance_types", ["g5.xlarge", "g4dn.xlarge"]),
            image_id=op_kwargs.pop("image_id", AMI),
            subnet_ids=op_kwargs.pop("subnet_ids", [s["SubnetId"] for s in subnets]),
            aws_conn_id=None,
            region_name="us-east-1",
            poll_interval=0.3,
            instance_check_interval=1.0,
            capacity_backoff=(0.5, 1.0),
            agent_args=op_kwargs.pop(
                "agent_args",
                # Chunks every 0.5 s (the default 3 s would make every session end wait for its last chunk).
                [
                    *("--heartbeat-interval", "1", "--log-interval", "0.5", "--imds-poll", "0.2"),
                    *("--sync-reserve", "1", "--min-grace", "1"),
                ],
            ),
            retry_delay=op_kwargs.pop("retry_delay", timedelta(seconds=1)),
            **op_kwargs,
        )
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def command_started(instance: dict) -> bool:
    """Has the agent on this emulated instance started the command (its console says so)?"""
    try:
        with open(os.path.join(instance["directory"], "console.log"), errors="replace") as fh:
            return "started the command" in fh.read()
    except OSError:
        return False


def outcome_of(ledger: RunLedger, session: int) -> dict | None:
    """A session's outcome.json as the agent wrote it (a plain dict; the product reads it typed), or None."""
    return ledger.get_json(ledger.key(layout.outcome(session)))


def heartbeat_of(ledger: RunLedger, session: int) -> dict | None:
    """A session's heartbeat.json as the agent last wrote it (a plain dict), or None."""
    return ledger.get_json(ledger.key(layout.heartbeat(session)))
