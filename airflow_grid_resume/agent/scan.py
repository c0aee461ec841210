"""Walking the execution directory, filtering it, and remembering what was already hashed."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from airflow_grid_resume.ledger.paths import is_temp_name, storable_path

log = logging.getLogger(__name__)

# A file whose mtime or ctime is this close to the moment it was hashed may still change within
# the same timestamp tick without its stat changing ("racily clean", as git calls it): such a
# file is hashed again next time instead of being trusted.
RACY_WINDOW_NS = 2_000_000_000

# Restore sets local files that differ from the checkpoint aside under this directory of the
# workdir (``KEPT_DIR/session-N/<their path>``, see agent/restore.py); a dot directory, so a
# script's globs over its own directories never see them as its state.
KEPT_DIR = ".grid-resume-kept"


def kept_original(rel: str) -> str:
    """The path a set-aside copy was kept for (``''`` for the kept directories themselves);
    any other path unchanged. Sync filters a kept copy as that path, so it is synced exactly
    when the file it was set aside from is."""
    while rel.split("/", 1)[0] == KEPT_DIR:
        parts = rel.split("/", 2)
        rel = parts[2] if len(parts) == 3 else ""
    return rel


class PathFilter:
    """Include and exclude globs over workdir-relative POSIX paths.

    A pattern with a ``/`` matches the whole relative path; one without matches any single
    component (like ``.gitignore``), so ``__pycache__`` or ``*.tmp`` apply at every depth. An
    excluded directory excludes its whole subtree. With include patterns, a file is kept only if
    it (or a directory above it) matches one. A copy that restore set aside under ``KEPT_DIR`` is
    matched as the path it was set aside from (``kept_original``).
    """

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = [p.rstrip("/") for p in include if p.strip("/")]
        self.exclude = [p.rstrip("/") for p in exclude if p.strip("/")]

    @staticmethod
    def _matches(rel: str, patterns: list[str]) -> bool:
        parts = rel.split("/")
        for pattern in patterns:
            if "/" in pattern:
                if fnmatch.fnmatchcase(rel, pattern) or any(
                    fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts))
                ):
                    return True
            elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
                return True
        return False

    def excluded(self, rel: str) -> bool:
        if any(is_temp_name(part) for part in rel.split("/")):
            return True
        rel = kept_original(rel)
        return bool(rel) and self._matches(rel, self.exclude)

    def included_file(self, rel: str) -> bool:
        if not self.include:
            return True
        rel = kept_original(rel)
        return bool(rel) and self._matches(rel, self.include)


@dataclass
class Tree:
    """What a walk found: regular files with their lstat, symlinks, directories, skipped specials,
    and ``unstorable``: (path, why) for entries no manifest can hold (sync refuses to commit then)."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unstorable: list[tuple[str, str]] = field(default_factory=list)


def walk(root: str, path_filter: PathFilter) -> Tree:
    """Walk ``root`` without following symlinks. Sockets, FIFOs and devices are skipped; an entry
    that vanishes or changes type while it is looked at is looked at again, or left to the next sync."""
    tree = Tree()
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir) if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if path_filter.excluded(rel):
                continue
            why = storable_path(root, rel)  # before stat: a path over PATH_MAX cannot even be stat'ed
            if why is not None:
                if _is_dir(entry) or path_filter.included_file(rel):
                    tree.unstorable.append((rel, why))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                found = _read_link(entry.path, rel)
                if found is None:
                    continue
                target, st = found
                if target is not None:
                    if path_filter.included_file(rel):
                        tree.links[rel] = target
                    continue
            if stat.S_ISDIR(st.st_mode):
                tree.dirs[rel] = stat.S_IMODE(st.st_mode)
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                if path_filter.included_file(rel):
                    tree.files[rel] = st
            else:
                tree.skipped.append(rel)
    if path_filter.include:
        # Keep only directories that lead to something kept, or that are themselves included.
        needed = {rel.rsplit("/", i)[0] for rel in (*tree.files, *tree.links) for i in range(1, rel.count("/") + 1)}
        tree.dirs = {d: m for d, m in tree.dirs.items() if d in needed or path_filter._matches(d, path_filter.include)}
    return tree


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return True  # cannot tell: reported rather than dropped


def _read_link(path: str, rel: str, attempts: int = 3) -> tuple[str | None, os.stat_result] | None:
    """(target, lstat) of a symlink; (None, lstat) when it was replaced by something else (a rename
    over it during the walk: the caller takes the new entry as it is now); None when it is gone or keeps
    changing, so this sync leaves it out (the next one sees it settled)."""
    for _ in range(attempts):
        try:
            target = os.readlink(path)
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:  # EINVAL: no longer a symlink
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return None, st
            log.debug("readlink %s: %s; trying again", rel, exc)
            continue
        if stat.S_ISLNK(st.st_mode):
            return target, st
        return None, st
    log.warning("%s kept changing while it was read as a symlink: left out of this sync", rel)
    return None


@dataclass(frozen=True)
class StatKey:
    """What must be unchanged for a file not to be read again. ctime catches a same-size write
    whose mtime was put back (``aws s3 sync`` misses that), since no call can set ctime."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class Digest:
    sha256: str
    chunks: tuple[str, ...]


class HashCache:
    """relpath -> (StatKey, Digest) for files whose content is known without reading them."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[StatKey, Digest]] = {}

    def lookup(self, rel: str, st: os.stat_result) -> Digest | None:
        hit = self._entries.get(rel)
        return hit[1] if hit and hit[0] == StatKey.of(st) else None

    def store(self, rel: str, st: os.stat_result, digest: Digest, *, hashed_at_ns: int | None = None) -> None:
        """Remember a digest. With ``hashed_at_ns``, refuse racily-clean files (see RACY_WINDOW_NS)."""
        if hashed_at_ns is not None and max(st.st_mtime_ns, st.st_ctime_ns) >= hashed_at_ns - RACY_WINDOW_NS:
            self._entries.pop(rel, None)
            return
        self._entries[rel] = (StatKey.of(st), digest)

    def forget(self, rel: str) -> None:
        """Hash ``rel`` again next time (its stored bytes went missing)."""
        self._entries.pop(rel, None)

    def stat_key(self, rel: str) -> StatKey | None:
        """The stat a cached digest is for (its inode tells whether the file was replaced since)."""
        hit = self._entries.get(rel)
        return hit[0] if hit else None

    def __len__(self) -> int:
        return len(self._entries)


def now_ns() -> int:
    """Wall-clock time in the same clock as file timestamps."""
    return time.time_ns()


def sha256_file(path: str, block: int = 8 * 1024 * 1024) -> str:
    """sha256 of a file, read in large blocks (hashlib releases the GIL on them)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while data := fh.read(block):
            digest.update(data)
    return digest.hexdigest()
