"""The training command: its own process group, its output pumped, its whole group signalled."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from airflow_grid_resume.agent.logship import LogSpool
from airflow_grid_resume.agent.outcome import EXIT_COMMAND_NOT_EXECUTABLE, EXIT_COMMAND_NOT_FOUND

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
READ_SIZE = 256 * 1024


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
    """A running command. Output goes to the agent's stdout/stderr and to the spool."""

    def __init__(
        self, argv: Sequence[str], *, cwd: str, env: dict[str, str], spool: LogSpool, passthrough: bool = True
    ):
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
            )
        except FileNotFoundError as exc:
            raise SpawnError(EXIT_COMMAND_NOT_FOUND, f"command not found: {argv[0]!r} ({exc.strerror})") from exc
        except PermissionError as exc:
            raise SpawnError(
                EXIT_COMMAND_NOT_EXECUTABLE, f"command not executable: {argv[0]!r} ({exc.strerror})"
            ) from exc
        self.pgid = self.proc.pid  # start_new_session makes the child its group's leader
        self.spool = spool
        self.passthrough = passthrough
        self._pump = threading.Thread(target=self._pump_output, name="grid-pump", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_output(self) -> None:
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ, 1)
        sel.register(self.proc.stderr, selectors.EVENT_READ, 2)
        open_streams = 2
        while open_streams:
            for key, _ in sel.select():
                data = os.read(key.fileobj.fileno(), READ_SIZE)  # type: ignore[union-attr]
                if not data:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                self.spool.append(data)
                if self.passthrough:
                    _write_fd(key.data, data)
        sel.close()

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
        self._pump.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return killed


def reap_orphans() -> None:
    """Reap any exited process re-parented to the agent (it is their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except (BrokenPipeError, OSError):
        pass
