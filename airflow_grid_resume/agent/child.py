"""The training command: its own process group, its output pumped, its whole group signalled."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from airflow_grid_resume.agent.logship import LogSpool
from airflow_grid_resume.agent.outcome import EXIT_COMMAND_NOT_EXECUTABLE, EXIT_COMMAND_NOT_FOUND
from airflow_grid_resume.agent.progress import ProgressTracker

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
READ_SIZE = 1024 * 1024
TAIL_INTERVAL = 0.05


def become_subreaper() -> bool:
    """Make orphaned grandchildren re-parent to the agent, so it can reap them (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class SpawnError(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Child:
    """A running command. Its stdout and stderr are files, not pipes: the command writes at disk
    (page cache) speed and can never block on the agent. A tail thread copies new bytes to the
    agent's own stdout/stderr and to the combined spool that is shipped to the ledger."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: dict[str, str],
        spool: LogSpool,
        capture_dir: str,
        passthrough: bool = True,
        progress: ProgressTracker | None = None,
    ) -> None:
        self.spool = spool
        self.progress = progress
        self.passthrough = passthrough
        self._streams: list[tuple[int, int]] = []  # (read fd, passthrough fd)
        self._offsets: list[int] = []
        write_fds = []
        for name, target in (("stdout", 1), ("stderr", 2)):
            path = os.path.join(capture_dir, f"command.{name}")
            write_fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600))
            self._streams.append((os.open(path, os.O_RDONLY), target))
            self._offsets.append(0)
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=write_fds[0],
                stderr=write_fds[1],
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            self._close_streams()
            raise SpawnError(EXIT_COMMAND_NOT_FOUND, f"command not found: {argv[0]!r} ({exc.strerror})") from exc
        except PermissionError as exc:
            self._close_streams()
            raise SpawnError(
                EXIT_COMMAND_NOT_EXECUTABLE, f"command not executable: {argv[0]!r} ({exc.strerror})"
            ) from exc
        finally:
            for fd in write_fds:
                os.close(fd)
        self.pgid = self.proc.pid  # start_new_session makes the child its group's leader
        self._stop_tail = threading.Event()
        self._tail = threading.Thread(target=self._tail_output, name="grid-tail", daemon=True)
        self._tail.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _copy_new_output(self) -> int:
        copied = 0
        for i, (fd, target) in enumerate(self._streams):
            while data := os.pread(fd, READ_SIZE, self._offsets[i]):
                self._offsets[i] += len(data)
                copied += len(data)
                self.spool.append(data)
                if self.progress is not None:
                    # Read after the bytes: a time by which every line in them had been written.
                    self.progress.feed(data, stream=i, written_by_ns=os.fstat(fd).st_mtime_ns)
                if self.passthrough:
                    _write_fd(target, data)
        return copied

    def _tail_output(self) -> None:
        while not self._stop_tail.is_set():
            if not self._copy_new_output():
                self._stop_tail.wait(TAIL_INTERVAL)

    def _close_streams(self) -> None:
        for fd, _ in self._streams:
            os.close(fd)
        self._streams = []

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def finish(self, grace: float) -> bool:
        """After the leader exits: end the rest of its group (SIGTERM, then SIGKILL after
        ``grace``), reap them, and drain the output. Returns True if stragglers had to be killed."""
        killed = False
        if self.group_alive():
            log.warning("processes of the command's group outlived it; stopping them")
            self.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.group_alive() and time.monotonic() < deadline:
                reap_orphans()
                time.sleep(0.05)
            if self.group_alive():
                killed = True
                self.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.group_alive() and time.monotonic() < deadline:
            reap_orphans()
            time.sleep(0.02)
        self._stop_tail.set()
        self._tail.join(timeout=30)
        self._copy_new_output()  # whatever was written after the tail's last pass
        if self.progress is not None:
            self.progress.close()
        self._close_streams()
        return killed


def reap_orphans() -> list[int]:
    """Reap any exited process re-parented to the agent (it is their subreaper); their exit codes, in
    the order reaped (Popen's convention: -N for a process killed by signal N)."""
    codes: list[int] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return codes
        if pid == 0:
            return codes
        codes.append(os.waitstatus_to_exitcode(status))


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except (BrokenPipeError, OSError):
        pass
