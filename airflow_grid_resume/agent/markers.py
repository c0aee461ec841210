"""Point-in-time checkpoints: the ``grid-resume: checkpoint`` marker, its capture, and what restore prefers.

A script prints ``grid-resume: checkpoint`` (same rules as a progress line) once the files in the workdir
form a complete checkpoint. When the agent reads that line it *captures* the workdir at once: hard links
of every file's current inode (and copies of symlinks and directories) into a capture directory inside
the workdir whose name holds the reserved temporary marker, so sync never records it and it is on the
same filesystem. The capture is then synced in the background while the script trains on; its manifest is
marked ``{"checkpoint": "marker"}``.

What the capture guarantees, honestly:

- A file the script replaces *by rename* after the capture (the contract's way to write) gets a new inode:
  the capture keeps the old bytes. So the captured set is the workdir as it was when the agent read the
  marker line, which is normally within about 0.1 s of the script printing it (with ``flush=True``).
- A script that starts replacing its next checkpoint's files within that moment can tear the capture. A
  file the capture's previous version (or the hash cache) knew under another inode whose ctime is after
  the output that held the marker was written was replaced after the marker: such a capture is dropped with
  a warning (sound, not complete: more output printed after the early write hides it).
- A file written *in place* (same inode) changes inside the capture too. The sync compares each captured
  file's size and mtime with what they were when captured, and reads it with a stat before and after: a
  capture whose files changed is not committed. Scripts should write by rename.

Once a run used markers (a marked manifest was restored, or this session saw a marker), every manifest
the agent commits says so (``"markers": true``), periodic syncs of the live workdir stop (they could only
commit sets the script never declared complete), and restore prefers the newest complete manifest: a
marked one, or the final sync after the command exited 0 (``{"checkpoint": "exit"}``). Manifests of such
a run that are not complete are restored only when no complete one verifies.

Stdlib only: this module ships inside the agent's zipapp.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import threading
from dataclasses import dataclass, field

from airflow_grid_resume.agent.scan import HashCache, PathFilter, walk
from airflow_grid_resume.ledger.checkpoints import MARKED
from airflow_grid_resume.ledger.paths import TEMP_MARKER

log = logging.getLogger(__name__)

# Inside the workdir (same filesystem: hard links work), named as a restore temporary (``.grid-resume-tmp-``
# and 8 hex digits): sync never records such a name and no manifest may hold one. Removed before each
# restore, so a restore's own random temporary name cannot meet it.
CAPTURE_DIR = f"{TEMP_MARKER}-00000000"
# A periodic sync that could not read a file stably (after its retries) commits nothing, this many times
# in a row; then it commits with that file's previous version, so a file that never holds still (a log
# appended all the time) cannot stop every checkpoint.
UNSTABLE_SKIPS = 2


# -- pure decisions ---------------------------------------------------------------------------


def exit_is_complete(status: str, exit_code: int, killed: bool) -> bool:
    """The final sync is a complete checkpoint when the command exited 0 (succeeded, or saved and exited
    after SIGTERM) without being killed. 143 means it died of SIGTERM: whatever it was writing may be torn."""
    return exit_code == 0 and not killed and status in ("succeeded", "interrupted")


def unstable_action(reason: str, consecutive_skips: int) -> str:
    """What a sync does when a file kept changing while it was read: ``"skip"`` (commit nothing) or
    ``"keep_previous"`` (record the file as the last manifest had it, or leave a new file out).

    A capture is never committed torn. A periodic sync skips up to UNSTABLE_SKIPS times in a row. The
    final sync cannot wait for a later one: it keeps the previous version (the command has exited; only
    a straggler it left could still write)."""
    if reason == MARKED:
        return "skip"
    if reason == "final":
        return "keep_previous"
    return "skip" if consecutive_skips < UNSTABLE_SKIPS else "keep_previous"


def replaced_after_marker(previous_ino: int | None, ino: int, ctime_ns: int, written_by_ns: int | None) -> bool:
    """A file that was replaced (new inode) after the output holding the marker was written: the script
    began its next checkpoint before the agent captured this one."""
    return written_by_ns is not None and previous_ino is not None and previous_ino != ino and ctime_ns > written_by_ns


def changed_in_capture(captured: tuple[int, int] | None, now: tuple[int, int]) -> bool:
    """(size, mtime_ns) at capture vs now: a captured file written in place since (None: not captured,
    i.e. it appeared in the capture directory afterwards, which nothing but a bug does)."""
    return captured != now


# -- the capture -------------------------------------------------------------------------------
@dataclass
class Capture:
    """One captured checkpoint: where it is, and each file's (size, mtime_ns) when captured."""

    number: int
    root: str
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    inodes: dict[str, int] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    progress: int | None = None  # the step the script had reported when it was taken

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def capture_base(workdir: str) -> str:
    return os.path.join(workdir, CAPTURE_DIR)


def clear_captures(workdir: str) -> None:
    """Remove captures a killed agent left behind (they only hold links to old inodes)."""
    shutil.rmtree(capture_base(workdir), ignore_errors=True)


def take_capture(
    workdir: str,
    number: int,
    path_filter: PathFilter,
    *,
    written_by_ns: int | None,
    previous: dict[str, int],
    cache: HashCache | None = None,
) -> Capture:
    """Hard-link the workdir's files into ``<workdir>/CAPTURE_DIR/<number>`` now.

    ``previous``: path -> inode at the last capture, to see files replaced after the marker. A file whose
    stat the hash cache knows keeps its digest under the new ctime (the link changed only that), so
    neither the capture nor the next sync reads it again."""
    root = os.path.join(capture_base(workdir), f"{number:06d}")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root, mode=0o700)
    capture = Capture(number, root)
    tree = walk(workdir, path_filter)
    for rel in sorted(tree.dirs, key=lambda d: d.count("/")):
        os.makedirs(os.path.join(root, rel), mode=0o700, exist_ok=True)
    for rel, target in tree.links.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), mode=0o700, exist_ok=True)
        os.symlink(target, os.path.join(root, rel))
    for rel, before in tree.files.items():
        src, dst = os.path.join(workdir, rel), os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the walk: it is not part of the workdir now
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            shutil.copy2(src, dst, follow_symlinks=False)  # a mount inside the workdir: a copy, not atomic
            capture.copied.append(rel)
        after = os.lstat(dst)
        if not stat.S_ISREG(after.st_mode):
            os.unlink(dst)
            continue
        known = previous.get(rel)
        if known is None and cache is not None:
            key = cache.stat_key(rel)
            known = key.ino if key else None
        if rel in capture.copied:
            ino, ctime = before.st_ino, before.st_ctime_ns
            with contextlib.suppress(FileNotFoundError):
                now = os.lstat(src)
                if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
                    capture.late.append(rel)  # changed while it was copied
        else:
            ino = after.st_ino
            # The walk's ctime, unless the name now points at another inode (replaced since the walk).
            ctime = before.st_ctime_ns if after.st_ino == before.st_ino else after.st_ctime_ns
        if replaced_after_marker(known, ino, ctime, written_by_ns) and rel not in capture.late:
            capture.late.append(rel)
        capture.files[rel] = (after.st_size, after.st_mtime_ns)
        capture.inodes[rel] = ino
        if cache is not None and rel not in capture.copied and after.st_ino == before.st_ino:
            digest = cache.lookup(rel, before)
            if digest is not None and (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
                cache.store(rel, after, digest)
    for rel in sorted(tree.dirs, key=lambda d: d.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.chmod(os.path.join(root, rel), tree.dirs[rel] | 0o700)
    return capture


class Captures:
    """The newest capture waiting to be synced (one at most: a newer marker replaces it) and the inodes of
    the last one taken. Thread-safe: the output tail adds, a sync thread takes."""

    def __init__(self, workdir: str, path_filter: PathFilter, cache: HashCache | None = None) -> None:
        self.workdir, self.filter, self.cache = workdir, path_filter, cache
        self._lock = threading.Lock()
        self._pending: Capture | None = None
        # path -> inode at the last capture; before the first, at the start (after the restore), so a
        # file replaced after the first marker is seen as well.
        self._previous: dict[str, int] = {rel: st.st_ino for rel, st in walk(workdir, path_filter).files.items()}
        self.taken = 0
        self.dropped = 0

    def take(self, written_by_ns: int | None) -> Capture | None:
        """Capture now; the capture replaces any older one still waiting. None (logged) if it failed or
        is torn."""
        with self._lock:
            self.taken += 1
            try:
                capture = take_capture(
                    self.workdir,
                    self.taken,
                    self.filter,
                    written_by_ns=written_by_ns,
                    previous=self._previous,
                    cache=self.cache,
                )
            except OSError as exc:
                log.error("checkpoint marker %d: could not capture the workdir: %s", self.taken, exc)
                shutil.rmtree(os.path.join(capture_base(self.workdir), f"{self.taken:06d}"), ignore_errors=True)
                return None
            self._previous = dict(capture.inodes)
            if capture.copied:
                log.warning(
                    "checkpoint marker %d: %d file(s) copied, not linked (another filesystem?): %s",
                    self.taken,
                    len(capture.copied),
                    ", ".join(capture.copied[:5]),
                )
            if capture.late:
                self.dropped += 1
                capture.discard()
                log.warning(
                    "checkpoint marker %d: not used: %s replaced after the marker was printed and before the agent "
                    "captured the workdir (the script began its next checkpoint at once). Leave a moment between the "
                    "marker and the next checkpoint's writes",
                    self.taken,
                    ", ".join(capture.late[:5]),
                )
                return None
            if self._pending is not None:
                log.info("checkpoint marker %d replaces marker %d, not synced yet", self.taken, self._pending.number)
                self._pending.discard()
            self._pending = capture
            return capture

    def pop(self) -> Capture | None:
        with self._lock:
            capture, self._pending = self._pending, None
            return capture

    def put_back(self, capture: Capture) -> None:
        """A capture whose sync was cancelled waits again, unless a newer one came meanwhile."""
        with self._lock:
            if self._pending is None:
                self._pending = capture
            else:
                capture.discard()

    def pending(self) -> bool:
        with self._lock:
            return self._pending is not None
