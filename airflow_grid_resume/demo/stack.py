"""A real Airflow (scheduler, triggerer, dag-processor, api-server; SQLite, LocalExecutor) in a
throwaway home, and its REST API: what the demo and the end-to-end test run against."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_grid_resume.emulator.moto_server import free_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; errors while polling count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            result = None
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class AirflowApi:
    """The api-server's public REST API (v2), as a user's script or the UI calls it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if self.token is None:  # simple auth manager, all admins: a token for the asking
            with urllib.request.urlopen(f"{self.base_url}/auth/token", timeout=10) as resp:
                self.token = json.loads(resp.read())["access_token"]
        req = urllib.request.Request(
            f"{self.base_url}/api/v2{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def trigger(self, dag_id: str) -> str:
        self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"])


class AirflowStack:
    """Start the four components with their own home and stop every process they started."""

    def __init__(self, home: Path, dags_folder: Path, extra_env: dict[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **extra_env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        self.procs: list[subprocess.Popen] = []
        self.api = AirflowApi(f"http://127.0.0.1:{self.port}")

    @property
    def url(self) -> str:
        return self.api.base_url

    def start(self, ready_dag: str, timeout: float = 180) -> AirflowStack:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True, capture_output=True
        )
        for component in COMPONENTS:
            with open(self.home / f"{component}.log", "wb") as log_file:  # the child keeps its own descriptor
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "airflow", component],
                        env=self.env,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        wait_for("the api-server", lambda: self.api.call("GET", "/version"), timeout)
        wait_for(f"the DAG {ready_dag} to be parsed", lambda: self.api.call("GET", f"/dags/{ready_dag}"), timeout, 2)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log_tails(self, chars: int = 3000) -> str:
        return "".join(
            f"--- {c}.log\n" + (self.home / f"{c}.log").read_text(errors="replace")[-chars:] for c in COMPONENTS
        )

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
