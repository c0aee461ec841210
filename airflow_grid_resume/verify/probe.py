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
Standard library only, and nothing to import: it must start fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


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
    env = os.environ
    record = {
        "probe_pid": os.getpid(),
        "pgid": os.getpgid(0),
        "session": env.get("GRID_RESUME_SESSION"),
        "resumed": env.get("GRID_RESUME_RESUMED"),
        "manifest": env.get("GRID_RESUME_MANIFEST"),
    }
    try:
        child = subprocess.Popen(command)
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
    write_record(
        f"{base}.end.json",
        {"exited_at": exited_at, "returncode": code, "sigterm_at": sigterm_at[0] if sigterm_at else None},
    )
    if returncode < 0:
        sys.stdout.flush()
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
        time.sleep(1)
    return code


if __name__ == "__main__":
    sys.exit(main())
