"""Process deaths at I/O boundaries, for the chaos simulation: the worker killed before or after its k-th
I/O call of the run, and the triggerer SIGKILLed at its k-th AWS call.

Standalone (no import from ``tests``): under ``dag.test()`` it is imported as ``tests.chaos_kills``; under the
real scheduler and triggerer the DAG file (in the task runner) and a ``sitecustomize`` (in the triggerer)
import it as ``chaos_kills`` from this directory, with the plan in the environment and the count of calls in
a file shared by every process and try of the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

WORKER_METHODS = ("execute", "on_capacity", "on_session_end")
# The environment of the real components: the worker's kills ("k:when k:when"), the triggerer's kill (k),
# the file that counts the calls (JSON), and the DAG whose worker is killed.
WORKER_KILLS_ENV, TRIGGERER_KILL_ENV, STATE_ENV, DAG_ENV = (
    "GRID_CHAOS_WORKER_KILLS",
    "GRID_CHAOS_TRIGGERER_KILL",
    "GRID_CHAOS_STATE",
    "GRID_CHAOS_DAG",
)
GO_SUFFIX = ".go"  # <state file>.go: the triggerer's calls count from when it exists
# "<AWS operation>:<marker file>": the worker hangs after that call, once per run, for the test to kill it
WORKER_HOLD_ENV = "GRID_CHAOS_WORKER_HOLD"


class WorkerDeath(BaseException):
    """Raised inside the worker at an I/O boundary: a BaseException, so no ``except Exception`` of the code
    under test can swallow it (a SIGKILL runs no handler either)."""


class WorkerKilled(Exception):
    """The worker process dying at a chosen line: Airflow fails the try and retries it."""


class KillLedger:
    """The count of I/O calls, the trace and the kills that happened: in memory, or in a JSON file (under
    an flock) shared by every process of the run, when the worker is a new process per try."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.doc: dict = {"calls": 0, "trace": [], "done": []}
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def state(self) -> Iterator[dict]:
        with self.lock:
            if self.path is None:
                yield self.doc
                return
            with open(self.path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.seek(0)
                text = fh.read()
                doc = json.loads(text) if text else {"calls": 0, "trace": [], "done": []}
                yield doc
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(doc))
                fh.flush()

    def read(self) -> dict:
        with self.state() as doc:
            return json.loads(json.dumps(doc))


def parse_kills(text: str) -> tuple[tuple[int, str], ...]:
    """``"3:before 17:after"`` -> ((3, "before"), (17, "after"))."""
    return tuple((int(k), when) for k, when in (item.split(":") for item in text.split()))


def format_kills(kills: tuple[tuple[int, str], ...]) -> str:
    return " ".join(f"{k}:{when}" for k, when in kills)


def sigkill_self(message: str) -> None:
    """A real death: SIGKILL, no handler, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)


def raise_death(message: str) -> None:
    raise WorkerDeath(message)


def _wrap_calls(boundary: Callable[[str, str, int], int], targets: list) -> list:
    """Wrap each (owner, attribute, async?, name of the call) with ``boundary`` before and after it; returns
    the originals, to restore."""
    originals = []
    for owner, attr, is_async, name_of in targets:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def sync_wrapper(self, *args, _original=original, _name_of=name_of, **kwargs):
            name = _name_of(args)
            k = boundary(name, "before", 0)
            try:
                return _original(self, *args, **kwargs)
            finally:  # an error answer is an answer too: the process may die before it reads it
                boundary(name, "after", k)

        async def async_wrapper(self, *args, _original=original, _name_of=name_of, **kwargs):
            name = _name_of(args)
            k = boundary(name, "before", 0)
            try:
                return await _original(self, *args, **kwargs)
            finally:
                boundary(name, "after", k)

        setattr(owner, attr, async_wrapper if is_async else sync_wrapper)
    return originals


def _first_arg(args: tuple) -> str:
    return str(args[0])


@contextlib.contextmanager
def worker_killed_at(
    kills: tuple[tuple[int, str], ...],
    *,
    ledger: KillLedger | None = None,
    die: Callable[[str], None] = raise_death,
    dag_id: str | None = None,
) -> Iterator[KillLedger]:
    """Kill the "worker" at its k-th I/O call of the run, before the call is sent or after it was carried out
    (its answer lost with the worker), for each (k, when) of ``kills``. The I/O calls are every botocore and
    aiobotocore call (the ledger's S3 calls, the hooks' and the launcher's EC2 calls) and every read or write of
    Airflow's task state store and XCom, made while the operator's worker methods run (of ``dag_id``'s tasks
    only, if given); the triggers' calls do not count. ``die`` is how the worker dies: a ``WorkerDeath`` raised
    (dag.test, which runs the triggers in the same process) or a SIGKILL of the task process (a real worker).
    Yields the ledger: ``read()["done"]`` lists the kills that happened ("k:when:operation in method") and
    ``["trace"]`` every call."""
    import aiobotocore.client
    import botocore.client
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_grid_resume.operators import GridRunOperator

    plan = dict(kills)
    ledger = ledger or KillLedger()
    current: list[str] = []  # the worker method running now (empty: not the worker)

    def boundary(operation: str, when: str, k: int) -> int:
        if not current:
            return 0
        where = f"{operation} in {current[-1]}"
        with ledger.state() as doc:
            if when == "before":
                doc["calls"] += 1
                k = doc["calls"]
                doc["trace"].append(f"{k}:{where}")
            if plan.get(k) != when:  # k counts every process's calls: each k comes once in a run
                return k
            doc["done"].append(f"{k}:{when}:{where}")
        die(f"worker killed {when} its I/O call {k} ({where})")
        return k

    originals = _wrap_calls(
        boundary,
        [
            (botocore.client.BaseClient, "_make_api_call", False, _first_arg),
            (aiobotocore.client.AioBaseClient, "_make_api_call", True, _first_arg),
            (TaskStateStoreAccessor, "get", False, lambda args: "task_state_store.get"),
            (TaskStateStoreAccessor, "set", False, lambda args: "task_state_store.set"),
            (RuntimeTaskInstance, "xcom_push", False, lambda args: "xcom_push"),
        ],
    )

    def worker_method(name: str):
        original = getattr(GridRunOperator, name)

        def run(self, *args, **kwargs):
            if dag_id is not None and self.dag_id != dag_id:
                return original(self, *args, **kwargs)
            current.append(name)
            try:
                return original(self, *args, **kwargs)
            except WorkerDeath as death:
                if len(current) > 1:  # execute calls on_capacity itself: the outermost method reports it
                    raise
                raise WorkerKilled(str(death)) from None  # Airflow sees a try that died: failed, retried
            finally:
                current.pop()

        return run

    originals += [(GridRunOperator, name, getattr(GridRunOperator, name)) for name in WORKER_METHODS]
    for name in WORKER_METHODS:
        setattr(GridRunOperator, name, worker_method(name))
    try:
        yield ledger
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


_armed: list[contextlib.AbstractContextManager] = []


def arm_worker_from_env() -> None:
    """In a real task runner (called by the DAG file): SIGKILL this process at the planned I/O calls of the
    DAG named in the environment, counting in the shared file. Once per process."""
    if _armed or not os.environ.get(WORKER_KILLS_ENV):
        return
    manager = worker_killed_at(
        parse_kills(os.environ[WORKER_KILLS_ENV]),
        ledger=KillLedger(os.environ[STATE_ENV]),
        die=sigkill_self,
        dag_id=os.environ.get(DAG_ENV),
    )
    manager.__enter__()
    _armed.append(manager)


def arm_worker_hold_from_env() -> None:
    """In a real task runner (called by the DAG file): the first time any try of the run has made the AWS call
    named in the environment and received its answer, create the marker file (holding this process's pid) and
    hang there, so that the test kills the whole worker (a Celery worker with its pool and the task's processes)
    at a known point of ``execute``, as a lost node would. Once per run: the marker file says it happened."""
    spec = os.environ.get(WORKER_HOLD_ENV)
    if not spec or _armed:
        return
    import aiobotocore.client
    import botocore.client

    operation, marker = spec.split(":", 1)

    def boundary(name: str, when: str, _: int) -> int:
        if name != operation or when != "after":
            return 0
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # held once already: later tries go on
            return 0
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        while True:  # until the test kills the worker
            time.sleep(60)

    _wrap_calls(
        boundary,
        [
            (botocore.client.BaseClient, "_make_api_call", False, _first_arg),
            (aiobotocore.client.AioBaseClient, "_make_api_call", True, _first_arg),  # execute launches async
        ],
    )
    _armed.append(contextlib.nullcontext())


def arm_triggerer_from_env() -> None:
    """In a real triggerer (called by a ``sitecustomize`` at interpreter start, so the trigger runner forked
    from it inherits it): at the k-th aiobotocore call of the process, SIGKILL the triggerer (the trigger
    runner and its supervisor, the ``airflow triggerer`` process), as an OOM kill or a lost node would. With a
    state file, the calls count from when the test creates ``<state>.go``."""
    k = int(os.environ.get(TRIGGERER_KILL_ENV) or 0)
    if not k or _armed:
        return
    import aiobotocore.client

    counted = [0]
    lock = threading.Lock()
    state = os.environ.get(STATE_ENV)

    def boundary(operation: str, when: str, _: int) -> int:
        if when != "before" or (state and not os.path.exists(state + GO_SUFFIX)):
            return 0
        with lock:
            counted[0] += 1
            if counted[0] != k:
                return counted[0]
        if state:
            with KillLedger(state + ".triggerer").state() as doc:
                doc["done"].append(f"{k}:before:{operation} in the triggerer")
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as fh:
            is_triggerer = b"triggerer" in fh.read()
        if is_triggerer:  # the trigger runner's supervisor: the triggerer itself
            os.kill(parent, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
        return k

    _wrap_calls(boundary, [(aiobotocore.client.AioBaseClient, "_make_api_call", True, _first_arg)])
    _armed.append(contextlib.nullcontext())
