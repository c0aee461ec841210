"""The probe: wraps the user's command inside the agent's process group to time it.

``python -m airflow_grid_resume.verify.probe RECORD_BASE -- COMMAND...`` runs COMMAND as a child
(same process group, same stdin/stdout/stderr, same environment) and writes small JSON files
outside the workdir: ``RECORD_BASE.start.json`` once the command started, ``RECORD_BASE.sigterm.json``
when the group's SIGTERM arrives, ``RECORD_BASE.end.json`` when the command exited and its code. It then exits
the way the command did (re-raising the same signal), so the agent classifies the session
exactly as it would without the probe. The agent's SIGKILL at the deadline kills the probe too:
then there is no end record, which is how verify knows the command was killed.
If the agent itself dies (verify was killed and took its agents with it), the probe kills its whole
process group, command and children included, so nothing runs on unattended.
When the command is a shell that dies of the SIGTERM at once while the trainer it started goes on
saving (``python train.py && echo done``), the probe, their subreaper, waits for the trainer too and
records its exit (``returncode``, ``exited_at``) and the shell's (``shell_returncode``), and exits
with the trainer's code: the agent gives the whole group the notice's time and takes the code of
what the shell left as the command's, so the trainer is what is judged, here as there.
Standard library only, and nothing to import: it must start fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
USER_TMPDIR = "GRID_RESUME_VERIFY_TMPDIR"  # the TMPDIR verify was started with, for the command
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh"})


def command_env(env: dict[str, str]) -> dict[str, str]:
    """The command's environment: the agent's, with the user's own TMPDIR instead of verify's."""
    env = dict(env)
    if USER_TMPDIR in env:
        user = env.pop(USER_TMPDIR)
        if user:
            env["TMPDIR"] = user
        else:
            env.pop("TMPDIR", None)
    return env


def end_group_with_parent() -> None:
    """When the agent (our parent) dies, SIGKILL our process group: the command and all it started.
    Linux ``PR_SET_PDEATHSIG``; elsewhere nothing."""
    parent = os.getppid()

    def end_group(*_: object) -> None:
        os.killpg(os.getpgid(0), signal.SIGKILL)

    if not sys.platform.startswith("linux"):
        return
    signal.signal(signal.SIGHUP, end_group)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl took effect
        end_group()


def become_subreaper() -> None:
    """Orphans of the command (a trainer whose shell died) re-parent to the probe (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def wait_orphans() -> tuple[int, float] | None:
    """Wait for every process re-parented to the probe. Their exit code, as the agent decides it (the last
    that failed, else 0; as a shell reports it), and when the last exited; None when there was none."""
    codes: list[int] = []
    while True:
        try:
            _, status = os.wait()
        except ChildProcessError:
            break
        code = os.waitstatus_to_exitcode(status)
        codes.append(128 - code if code < 0 else code)
    failed = [code for code in codes if code != 0]
    return ((failed[-1] if failed else 0), time.time()) if codes else None


def write_record(path: str, doc: dict) -> None:
    """Atomically: a temporary file renamed into place, so a reader never sees half a record."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def read_record(path: str) -> dict | None:
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m airflow_grid_resume.verify.probe RECORD_BASE -- COMMAND...", file=sys.stderr)
        return 2
    base, command = args[0], args[2:]
    sigterm_at: list[float] = []

    def on_sigterm(*_: object) -> None:
        # The agent signals the whole group: the command gets the SIGTERM directly; the probe only
        # notes when, at once (the command may never exit, and then the probe is killed with it).
        if not sigterm_at:
            sigterm_at.append(time.time())
            write_record(f"{base}.sigterm.json", {"sigterm_at": sigterm_at[0]})

    signal.signal(signal.SIGTERM, on_sigterm)
    end_group_with_parent()
    become_subreaper()
    env = os.environ
    record = {
        "probe_pid": os.getpid(),
        "pgid": os.getpgid(0),
        "session": env.get("GRID_RESUME_SESSION"),
        "resumed": env.get("GRID_RESUME_RESUMED"),
        "manifest": env.get("GRID_RESUME_MANIFEST"),
    }
    try:
        child = subprocess.Popen(command, env=command_env(dict(os.environ)))
    except (FileNotFoundError, PermissionError) as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        print(f"cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        now = time.time()
        write_record(f"{base}.start.json", {**record, "started_at": now})
        write_record(f"{base}.end.json", {"exited_at": now, "returncode": code, "sigterm_at": None})
        return code
    write_record(f"{base}.start.json", {**record, "pid": child.pid, "started_at": time.time()})
    returncode = child.wait()
    exited_at = time.time()
    code = 128 - returncode if returncode < 0 else returncode
    end = {"exited_at": exited_at, "returncode": code, "sigterm_at": sigterm_at[0] if sigterm_at else None}
    # A shell killed by the SIGTERM: the trainer it ran, now our orphan, is what saves (the agent enforces the
    # group's deadline, killing us with it). Any other command is judged by its own exit, as before.
    shell_died = bool(sigterm_at) and code == 128 + signal.SIGTERM and os.path.basename(command[0]) in SHELLS
    orphan = wait_orphans() if shell_died else None
    if orphan is not None:
        end.update(returncode=orphan[0], exited_at=orphan[1], shell_returncode=code)
    write_record(f"{base}.end.json", end)
    if orphan is not None:
        return orphan[0]  # the agent would take the same code from the group as the command's
    if returncode < 0:
        sys.stdout.flush()
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
        time.sleep(1)
    return code


if __name__ == "__main__":
    sys.exit(main())
