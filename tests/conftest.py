"""Shared fixtures: moto's server over HTTP, a bucket per test, the metadata emulator, agent runs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.s3client import make_s3_client
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.emulator.imds import MetadataService
from airflow_grid_resume.emulator.moto_server import MotoServer

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
    """Airflow reads its home at import: give the test session its own, before anything imports it."""
    home = config._tmp_path_factory.mktemp("airflow-home")  # type: ignore[attr-defined]
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


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
