"""A real Airflow (scheduler, triggerer, dag-processor, api-server; LocalExecutor, or the CeleryExecutor with a
Celery worker) in a throwaway home, on SQLite or on a throwaway PostgreSQL (and Redis, the Celery broker), and its
REST API: what the demo and the end-to-end tests run against."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_grid_resume.emulator.moto_server import free_port

LOG_SERVER = "log-server"
CELERY_WORKER = "celery-worker"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", LOG_SERVER)
COMMANDS = {
    LOG_SERVER: [
        sys.executable,
        "-m",
        "uvicorn",
        "airflow.utils.serve_logs.log_server:get_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--no-access-log",
        "--log-level",
        "warning",
    ],
    CELERY_WORKER: [sys.executable, "-m", "airflow", "celery", "worker"],
}
# Where Debian puts the PostgreSQL server binaries when they are not on PATH.
POSTGRES_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


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


def loopback_hostname() -> str:
    """``[core] hostname_callable`` of the stack: the api-server fetches a running task's log from
    the log server at the task's hostname, and that server listens on the loopback interface only."""
    return "127.0.0.1"


class AirflowApi:
    """The api-server's public REST API (v2), as a user's script or the UI calls it."""

    def __init__(self, base_url: str, login: tuple[str, str] | None = None) -> None:
        self.base_url = base_url
        self.login = login
        self.token: str | None = None

    def get_token(self) -> str:
        """A JWT: with ``login``, from the user's password; else (all admins) for the asking."""
        if self.login is None:
            request = urllib.request.Request(f"{self.base_url}/auth/token")
        else:
            body = json.dumps({"username": self.login[0], "password": self.login[1]}).encode()
            request = urllib.request.Request(
                f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}
            )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return str(json.loads(resp.read())["access_token"])

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if self.token is None:
            self.token = self.get_token()
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


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for Airflow's metadata database.

    The server refuses to run as root: as root, it runs as the ``postgres`` user (runuser). fsync is off:
    the cluster lives as long as one test.
    """

    def __init__(self, user: str = "postgres") -> None:
        self.user = user
        self.port = 0
        self.dir: str | None = None

    @staticmethod
    def _binary(name: str) -> str:
        found = shutil.which(name) or next(
            (os.path.join(d, name) for d in POSTGRES_BIN_DIRS if os.access(os.path.join(d, name), os.X_OK)), None
        )
        if found is None:
            raise FileNotFoundError(f"no PostgreSQL {name} on PATH or in {', '.join(POSTGRES_BIN_DIRS)}")
        return found

    def _as_user(self) -> list[str]:
        return ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        self.dir = tempfile.mkdtemp(prefix="grid-resume-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user, self.user)
        self.port = free_port()
        data = os.path.join(self.dir, "data")
        subprocess.run(
            [*self._as_user(), self._binary("initdb"), "-D", data, "--auth=trust", "-U", self.user, "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off"
        )
        log = os.path.join(self.dir, "server.log")
        subprocess.run(
            [*self._as_user(), self._binary("pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start"],
            check=True,
            capture_output=True,
        )
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                [*self._as_user(), self._binary("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A throwaway Redis (Debian's ``redis-server``) on 127.0.0.1, nothing saved to disk: the CeleryExecutor's
    broker for one test."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")  # Debian's redis-server package: /usr/bin
        if binary is None:
            raise FileNotFoundError("no redis-server: make system-deps installs Debian's redis-server")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            with contextlib.closing(socket.create_connection(("127.0.0.1", self.port), timeout=2)) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")

        try:
            wait_for("redis-server", answers, 30, 0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            end_group(self.proc, signal.SIGTERM, grace=10)
            self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def end_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Signal the process group ``proc`` leads, reap ``proc``, then SIGKILL what is left of the group.

    A component's children outlive it otherwise: the api-server's uvicorn worker, reparented to
    init, kept serving after its parent had exited on SIGTERM. The group id stays valid while any
    member lives, even after the leader is reaped.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def celery_env(broker: str, database_url: str | None) -> dict[str, str]:
    """The CeleryExecutor's settings, as Airflow's official compose file has them: the broker, and the metadata
    database as the result backend (SQLAlchemy's ``db+`` form). Two processes per worker: enough for a grid task's
    short ``execute`` and resume methods, which hold no slot while the run trains."""
    if not database_url or not database_url.startswith("postgresql"):
        raise ValueError("the CeleryExecutor needs a database that every process shares: pass database_url")
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql://" + database_url.split("://", 1)[1],
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    }


class AirflowStack:
    """Start the components with their own home and stop every process they started.

    ``components`` names the processes: an Airflow command, with ``-N`` to run more than one
    (``("triggerer-1", "triggerer-2")``), or ``log-server``; ``database_url`` puts the metadata database
    elsewhere than SQLite in the home (``PostgresServer.url``). ``celery_broker`` (``RedisServer.url``) runs the
    CeleryExecutor instead of the LocalExecutor, with the metadata database as its result backend: start a
    ``celery-worker`` component to run the tasks.

    Everything listens on 127.0.0.1 only: the api-server (``[api] host``) and one log server for the
    worker's and the triggerers' logs (Airflow's own binds every interface and has no host option, so
    the scheduler and triggerers run with ``--skip-serve-logs`` and the stack starts it on loopback).
    ``login`` (user, password) turns the simple auth manager's "everyone is admin" off: that user
    (an admin) must log in.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: dict[str, str],
        components: tuple[str, ...] = COMPONENTS,
        database_url: str | None = None,
        login: tuple[str, str] | None = None,
        celery_broker: str | None = None,
    ) -> None:
        self.home = home
        self.components = components
        self.port = free_port()
        self.log_port = free_port()
        self.login = login
        # The components' temporary files (multiprocessing's pymp-* directories among them, which a Celery worker
        # stopped or killed leaves behind) go to a short directory of the stack's own, removed by stop().
        self.tmp = tempfile.mkdtemp(prefix="grid-resume-airflow-")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **extra_env,
            "TMPDIR": self.tmp,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if celery_broker else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False" if login else "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{login[0]}:admin" if login else "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.loopback_hostname",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # one log server on one machine serves the worker's and the triggerers' log files
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_port),
            **({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url} if database_url else {}),
            **(celery_env(celery_broker, database_url) if celery_broker else {}),
        }
        self.procs: list[subprocess.Popen] = []  # every process ever started, restarts included
        self.running: dict[str, subprocess.Popen] = {}
        self.api = AirflowApi(f"http://127.0.0.1:{self.port}", login)

    @property
    def url(self) -> str:
        return self.api.base_url

    def launch(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start component ``name`` (again: its log file is appended to), with ``env`` added to its environment."""
        os.makedirs(self.tmp, exist_ok=True)  # started again after stop()
        command = re.sub(r"-\d+$", "", name)
        argv = COMMANDS.get(command, [sys.executable, "-m", "airflow", command])
        argv = argv + (["--skip-serve-logs"] if command in ("scheduler", "triggerer", CELERY_WORKER) else [])
        argv = argv + (["--port", str(self.log_port)] if command == LOG_SERVER else [])
        with open(self.home / f"{name}.log", "ab") as log_file:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                cwd=self.home,  # not a source checkout: its *.egg-info would list the plugin twice
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.running[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal component ``name``'s whole process group (SIGKILL: as a crash or an OOM kill would) and reap it."""
        end_group(self.running.pop(name), sig)

    def start(self, ready_dag: str, timeout: float = 180, only: tuple[str, ...] | None = None) -> AirflowStack:
        """Migrate the database, start the components (``only`` these, if given: ``launch`` the rest later)."""
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True, capture_output=True
        )
        if self.login:
            (self.home / "passwords.json").write_text(json.dumps({self.login[0]: self.login[1]}))
        for component in only or self.components:
            self.launch(component)
        wait_for("the api-server", lambda: self.api.call("GET", "/version"), timeout)
        wait_for(f"the DAG {ready_dag} to be parsed", lambda: self.api.call("GET", f"/dags/{ready_dag}"), timeout, 2)
        return self

    def stop(self) -> None:
        for proc in self.procs:  # all at once, so they shut down in parallel
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            end_group(proc, signal.SIGTERM)
        self.running.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tails(self, chars: int = 3000) -> str:
        logs = [(c, self.home / f"{c}.log") for c in self.components]
        return "".join(f"--- {c}.log\n" + p.read_text(errors="replace")[-chars:] for c, p in logs if p.exists())

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
