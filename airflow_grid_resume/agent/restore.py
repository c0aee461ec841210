"""Bringing a workdir to the newest checkpoint of a run that fully verifies.

The newest manifest is found from ``latest.json`` plus one LIST of what is newer than it (the
pointer is written after the manifest, so it can lag by one); all manifests are listed only when
there is no pointer or everything from it on fails. Manifests are tried newest first. One that is
malformed or has unsafe paths is rejected before anything is written; one whose packs or objects
turn out missing or corrupt is abandoned, the files it created are removed, and the next older
manifest is tried, each fallback logged with its reason; the result says which checkpoint was
restored instead and how many progress steps that costs (``fallback_note``), which the agent logs as
an error and records in its outcome. A full disk raises DiskFullError (the checkpoint does not
fit). A manifest in a newer format than this agent reads stops the restore with
UnsupportedFormatError. Packs are read with one ranged GET per
run of needed files, in parallel; every file is written under a temporary name, verified against
its sha256 (a chunked file chunk by chunk), and renamed into place. Temporary names are short
names beside the target (NAME_MAX holds whatever the target's length), and whole blocks of zeros
are left as holes, so a sparse file restores sparse.

Restore never destroys what is already in the workdir (``local_decision``): a file identical to
the checkpoint's is kept, a path the checkpoint does not have is left alone, and anything else at a
checkpoint path is set aside under ``KEPT_DIR/session-N/`` before the checkpoint's version takes its
place (a hard link, so the swap itself stays one atomic rename). The kept copies are logged,
recorded in the outcome, and synced with the rest of the workdir.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from airflow_grid_resume.agent.scan import KEPT_DIR, Digest, HashCache, sha256_file
from airflow_grid_resume.ledger.checkpoints import restore_defers
from airflow_grid_resume.ledger.compat import zip_strict
from airflow_grid_resume.ledger.errors import (
    CorruptObjectError,
    DiskFullError,
    ManifestError,
    NoRestorableCheckpointError,
    UnsafePathError,
    UnsupportedFormatError,
)
from airflow_grid_resume.ledger.manifest import FileEntry, Manifest, chunk_length
from airflow_grid_resume.ledger.paths import TEMP_MARKER, safe_target
from airflow_grid_resume.ledger.store import RunLedger, StoredManifest

log = logging.getLogger(__name__)

# Needed files of one pack closer than this are fetched by one ranged GET (the gap's bytes cost
# less than a second request); see docs/ledger.md, "Packs".
RANGE_MERGE_GAP = 1024 * 1024
# A run is cut at this many bytes, so a pack is read (and its files written) by several workers at
# once: S3's own advice for throughput is parallel ranged GETs of a few MiB.
RANGE_MAX = 2 * 1024 * 1024
# Whole blocks of zeros this long are not written but left as holes (a filesystem block).
SPARSE_BLOCK = 4096
_ZERO_BLOCK = bytes(SPARSE_BLOCK)


# What restore does at a checkpoint path, given what the workdir holds there (``local_decision``).
KEEP = "keep"  # the same thing is there already: left as it is
WRITE = "write"  # nothing is there: the checkpoint's version is written
OVERWRITE = "overwrite"  # this restore wrote it from a newer manifest that then failed: its bytes are in the ledger
SET_ASIDE = "set-aside"  # something else is there: kept under KEPT_DIR, then the checkpoint's version is written


def local_decision(local: str | None, wanted: str, *, same: bool = False, ours: bool = False) -> str:
    """What restore does at one checkpoint path: the pure rule behind "restore never destroys a
    local file". ``local`` is what the workdir holds there (``file``, ``dir``, ``link``, ``other``
    or None), ``wanted`` what the manifest has (``file``, ``dir`` or ``link``), ``same`` whether a
    local file or link already has the manifest's bytes or target, ``ours`` whether this restore
    itself wrote it. Nothing that existed before the restore is ever overwritten or deleted: a
    local file newer than the checkpoint (a rerun on the same disk, a stop/start interruption)
    may be the only copy of that work."""
    if local is None:
        return WRITE
    if local == wanted and (same or wanted == "dir"):
        return KEEP
    if ours and local in ("file", "link"):
        return OVERWRITE
    return SET_ASIDE


def kept_dir(label: str, attempt: int = 1) -> str:
    """The workdir-relative directory one restore sets files aside in: ``KEPT_DIR/LABEL``, then
    ``LABEL.2``, ``LABEL.3``... when it is taken (the same directory restored into by another run)."""
    return f"{KEPT_DIR}/{label}" if attempt == 1 else f"{KEPT_DIR}/{label}.{attempt}"


@dataclass
class RestoreResult:
    manifest: Manifest | None
    files_written: int = 0
    files_kept: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (path, where it was kept), relative
    # manifest name -> the progress step it records (``extra.progress.done``), for the fallbacks and
    # the restored one, when recorded.
    steps: dict[str, int] = field(default_factory=dict)

    @property
    def steps_lost(self) -> int | None:
        """Steps the fallback costs: the newest unverifiable checkpoint's step minus the restored one's."""
        if not self.fallbacks or self.manifest is None:
            return None
        newest, restored = self.steps.get(self.fallbacks[0][0]), self.steps.get(self.manifest.name)
        return None if newest is None or restored is None else max(0, newest - restored)

    def fallback_record(self) -> dict | None:
        """What outcome.json says of a fallback: which checkpoint was restored instead of which, and at
        what cost in steps (None when it is unknown: the script prints no progress lines)."""
        if not self.fallbacks or self.manifest is None:
            return None
        newest = self.fallbacks[0][0]
        return {
            "newest": newest,
            "restored": self.manifest.name,
            "newest_step": self.steps.get(newest),
            "restored_step": self.steps.get(self.manifest.name),
            "steps_lost": self.steps_lost,
        }

    def fallback_note(self) -> str | None:
        """The log line (and outcome warning) of a fallback: never a silent restart from an older point."""
        record = self.fallback_record()
        if record is None:
            return None
        newest, why = self.fallbacks[0]
        lost = self.steps_lost
        cost = (
            f"about {lost} steps (step {record['newest_step']} -> {record['restored_step']}) will be done again"
            if lost is not None
            else "the steps this costs are unknown (the checkpoints record no 'grid-resume: progress' step)"
        )
        others = f" and {len(self.fallbacks) - 1} more" if len(self.fallbacks) > 1 else ""
        return (
            f"the newest checkpoint {newest}{others} did not verify ({why}); restored the older checkpoint "
            f"{record['restored']} instead: {cost}"
        )

    def summary(self) -> str:
        if self.manifest is None:
            return "no checkpoint in the run yet: starting fresh"
        aside = f", {len(self.set_aside)} local set aside" if self.set_aside else ""
        return (
            f"restored manifest {self.manifest.name} ({len(self.manifest.files)} files, "
            f"{self.manifest.total_bytes / 1048576:.1f} MiB): {self.files_written} written{aside}, "
            f"{self.files_kept} already present, {self.bytes_downloaded / 1048576:.1f} MiB downloaded "
            f"in {self.seconds:.1f} s"
        )

    def set_aside_record(self, listed: int = 20) -> dict | None:
        """The outcome's ``set_aside``: how many, in which directories, the first ``listed`` paths."""
        if not self.set_aside:
            return None
        dirs = sorted({"/".join(kept.split("/", 2)[:2]) for _, kept in self.set_aside})
        paths = sorted(p for p, _ in self.set_aside)[:listed]
        return {"count": len(self.set_aside), "dirs": dirs, "paths": paths}


class Restorer:
    def __init__(
        self,
        ledger: RunLedger,
        root: str,
        *,
        parallelism: int = 16,
        cache: HashCache | None = None,
        session: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.root = os.path.abspath(root)
        self.parallelism = parallelism
        self.cache = cache if cache is not None else HashCache()
        self._lock = threading.Lock()
        # Where differing local files go: per session, or per restore outside a session.
        stamp = time.strftime("restore-%Y%m%dT%H%M%SZ", time.gmtime())
        self.kept_label = f"session-{session}" if session is not None else stamp
        self.set_aside: list[tuple[str, str]] = []  # (path, where it was kept), even if the restore then fails
        self._kept_dirs: set[str] = set()  # the kept_dir()s this restore created
        self._ours: set[str] = set()  # files and links this restore wrote (their bytes are in the ledger)
        self._read: dict[str, Manifest] = {}  # manifests read to order them, not yet restored

    def candidates(self) -> Iterator[StoredManifest]:
        """Manifests newest first: from the pointer on (one GET, one LIST), then all of them."""
        pointer = self.ledger.read_pointer()
        tried: set[str] = set()
        if pointer is not None:
            for stored in self.ledger.list_manifests(from_name=pointer[0]):
                tried.add(stored.name)
                yield stored
        for stored in self.ledger.list_manifests():
            if stored.name not in tried:
                yield stored

    def preferred(self) -> Iterator[StoredManifest]:
        """Candidates in the order restore tries them: newest first, except that a manifest of a run using
        checkpoint markers that is not itself complete waits until every complete one failed (see
        agent/markers.py). A manifest that cannot be read comes in place: restore reports why."""
        deferred: list[StoredManifest] = []
        for stored in self.candidates():
            try:
                manifest = self.ledger.read_manifest(stored)
            except Exception:
                yield stored
                continue
            if restore_defers(manifest.extra):
                log.info("manifest %s is not a complete checkpoint of this marker run: trying older ones", stored.name)
                self._read[stored.name] = manifest
                deferred.append(stored)
                continue
            self._read[stored.name] = manifest
            yield stored
        if deferred:
            log.warning("no complete (marked) checkpoint verifies: trying the unmarked ones of the run")
        yield from deferred

    def restore(self) -> RestoreResult:
        """Restore the newest verifiable manifest; raise if manifests exist but none verifies."""
        started = time.monotonic()
        result = RestoreResult(manifest=None, set_aside=self.set_aside)
        tried = 0
        for candidate in self.preferred():
            tried += 1
            created: set[str] = set()
            manifest = None
            try:
                manifest = self._read.pop(candidate.name, None) or self.ledger.read_manifest(candidate)
                _check_layout(manifest)
                self._apply(manifest, result, created)
            except UnsupportedFormatError:
                self._remove_created(created, keep=set())
                raise
            except (ManifestError, CorruptObjectError, UnsafePathError) as exc:
                self._remove_created(created, keep=set())
                result.fallbacks.append((candidate.name, str(exc)))
                self._note_step(result, candidate)
                log.error("cannot restore manifest %s: %s", candidate.name, exc)
                continue
            except OSError as exc:
                self._remove_created(created, keep=set())
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFullError(self._disk_full(candidate.name, manifest, exc)) from exc
                raise
            result.manifest = manifest
            result.seconds = time.monotonic() - started
            step = _recorded_step(manifest.extra)
            if step is not None:
                result.steps[manifest.name] = step
            kept = result.set_aside_record()
            if self.set_aside and kept:
                where = ", ".join(kept["dirs"])
                log.warning(
                    "%d local path(s) differed from the checkpoint and were set aside under %s (synced with the "
                    "workdir; nothing was overwritten): %s%s",
                    len(self.set_aside),
                    where,
                    ", ".join(sorted(p for p, _ in self.set_aside)[:10]),
                    " ..." if len(self.set_aside) > 10 else "",
                )
            if result.fallbacks:
                log.warning(
                    "restored the older manifest %s after %d newer one(s) failed to verify: %s",
                    manifest.name,
                    len(result.fallbacks),
                    ", ".join(name for name, _ in result.fallbacks),
                )
            return result
        if not tried:
            return result
        raise NoRestorableCheckpointError(
            f"the run has {tried} checkpoint manifest(s) but none verifies "
            f"({'; '.join(f'{n}: {why}' for n, why in result.fallbacks[:3])}). Refusing to start over, "
            "which would silently lose the run's work."
        )

    def _note_step(self, result: RestoreResult, candidate: StoredManifest) -> None:
        """The step an unverifiable manifest records, read leniently (it may be the part that is wrong)."""
        try:
            doc = json.loads(self.ledger.get(candidate.key) or b"{}")
        except Exception:  # unreadable: its step is simply unknown
            return
        step = _recorded_step(doc.get("extra") if isinstance(doc, dict) else None)
        if step is not None:
            result.steps[candidate.name] = step

    def _disk_full(self, name: str, manifest: Manifest | None, exc: OSError) -> str:
        """What a full disk during the restore means, with the sizes to act on."""
        size = f" ({manifest.total_bytes / 1048576:.1f} MiB in {len(manifest.files)} files)" if manifest else ""
        try:
            usage = shutil.disk_usage(self.root)
            space = f"{usage.free / 1048576:.1f} MiB free of {usage.total / 1048576:.1f} MiB"
        except OSError:
            space = "free space unknown"
        return (
            f"the disk filled up while restoring checkpoint {name}{size} into {self.root} ({space}): "
            f"{exc.strerror}. The checkpoint does not fit on the instance's disk: this is not a failure of the "
            "script, and no retry on the same disk size can succeed"
        )

    # -- applying one manifest --------------------------------------------------------------
    def _apply(self, manifest: Manifest, result: RestoreResult, created: set[str]) -> None:
        """Three phases in one pool, so no task ever waits on another: check what is already
        in place, fetch (whole small files, chunks of large ones), then verify and rename."""
        os.makedirs(self.root, exist_ok=True)
        for rel in _directories(manifest):
            self._ensure_dir(rel, created)
        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="grid-restore")
        partials: list[_Partial] = []
        try:
            # Only files that exist locally are checked (in parallel: the check may hash them).
            targets = [(f, safe_target(self.root, f.path)) for f in manifest.files]
            present = [(f, t) for f, t in targets if os.path.lexists(t)]
            size = manifest.chunk_size
            kept = _run_all(pool, [(self._already_there, f, t, size) for f, t in present])
            kept_paths = {f.path for (f, _), ok in zip_strict(present, kept) if ok}
            todo = [f for f in manifest.files if f.path not in kept_paths]
            result.files_kept += len(manifest.files) - len(todo)
            tasks: list[tuple] = []
            packed: dict[str, list[FileEntry]] = {}
            for f in todo:
                if f.chunks:
                    partial = _Partial.open(f, safe_target(self.root, f.path))
                    partials.append(partial)
                    tasks += [(self._fetch_chunk, partial, i, manifest.chunk_size) for i in range(len(f.chunks))]
                elif f.pack:
                    packed.setdefault(f.pack, []).append(f)
                elif f.size == 0:
                    tasks.append((self._write_file, f, b"", created))
                else:
                    tasks.append((self._restore_small, f, created))
            for pack, files in packed.items():
                tasks += [(self._restore_range, pack, run, created) for run in plan_pack_reads(files)]
            downloaded = _run_all(pool, tasks)
            result.bytes_downloaded += sum(downloaded)
            whole = manifest.version < 2  # format 1 records the hash of a chunked file's whole content
            _run_all(pool, [(self._finish_large, p, created, whole) for p in partials])
            result.files_written += len(todo)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for partial in partials:
                partial.discard()
        for link in manifest.links:
            target = safe_target(self.root, link.path)
            if os.path.islink(target) and os.readlink(target) == link.target:
                continue
            tmp = _temp_name(target)
            os.symlink(link.target, tmp)
            self._replace(tmp, target, link.path, created)
        for d in sorted(manifest.dirs, key=lambda d: d.path.count("/"), reverse=True):
            os.chmod(safe_target(self.root, d.path), d.mode)

    def _ensure_dir(self, rel: str, created: set[str]) -> None:
        target = safe_target(self.root, rel)
        action = local_decision(_kind(target), "dir", ours=rel in self._ours)
        if action == SET_ASIDE:
            self._set_aside(rel, target, move=True)
        elif action == OVERWRITE:
            os.unlink(target)
        if not os.path.exists(target):
            os.mkdir(target, 0o755)
            created.add(rel)

    def _restore_small(self, f: FileEntry, created: set[str]) -> int:
        data = self.ledger.get_blob(f.sha256)
        if len(data) != f.size:
            raise CorruptObjectError(f"object {f.sha256} for {f.path!r} has {len(data)} bytes, expected {f.size}")
        return self._write_file(f, data, created)

    def _restore_range(self, pack: str, files: list[FileEntry], created: set[str]) -> int:
        """One ranged GET of a pack, then every file in it verified and renamed into place."""
        start = min(f.offset for f in files)
        data = self.ledger.get_pack_range(pack, start, max(f.offset + f.size for f in files) - start)
        view = memoryview(data)
        for f in files:
            body = view[f.offset - start : f.offset - start + f.size]
            actual = hashlib.sha256(body).hexdigest()
            if actual != f.sha256:
                raise CorruptObjectError(f"pack {pack} is corrupt: {f.path!r} hashes to {actual}, not {f.sha256}")
            self._write_file(f, body, created)
        return len(data)

    def _write_file(self, f: FileEntry, data: bytes | memoryview, created: set[str]) -> int:
        target = safe_target(self.root, f.path)
        tmp = _temp_name(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, len(data))
            _write_sparse(fd, data, 0)
            os.fchmod(fd, f.mode)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._install(tmp, target, f, created)
        return len(data)

    def _fetch_chunk(self, partial: _Partial, index: int, chunk_size: int) -> int:
        data = self.ledger.get_blob(partial.entry.chunks[index])
        if len(data) != chunk_length(partial.entry.size, chunk_size, index):
            raise CorruptObjectError(f"object {partial.entry.chunks[index]} has the wrong length")
        _write_sparse(partial.fd, data, index * chunk_size)
        return len(data)

    def _finish_large(self, partial: _Partial, created: set[str], whole: bool) -> None:
        """Every chunk was verified on arrival (and format 2's sha256 is the root of the chunks,
        checked when the manifest was parsed); format 1 also checks the whole file's hash."""
        f = partial.entry
        if whole and sha256_file(partial.tmp) != f.sha256:
            raise CorruptObjectError(f"file {f.path!r} does not match its sha256 once assembled")
        os.fchmod(partial.fd, f.mode)
        partial.close()
        self._install(partial.tmp, partial.target, f, created)
        partial.tmp = ""

    def _install(self, tmp: str, target: str, f: FileEntry, created: set[str]) -> None:
        os.utime(tmp, ns=(f.mtime_ns, f.mtime_ns))
        self._replace(tmp, target, f.path, created)
        self.cache.store(f.path, os.lstat(target), Digest(f.content_id, f.chunks))

    def _already_there(self, f: FileEntry, target: str, chunk_size: int) -> bool:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
            return False
        if self.cache.lookup(f.path, st) is None and not _same_bytes(target, f, chunk_size):
            return False
        if stat.S_IMODE(st.st_mode) != f.mode:
            os.chmod(target, f.mode)
        if st.st_mtime_ns != f.mtime_ns:
            os.utime(target, ns=(f.mtime_ns, f.mtime_ns), follow_symlinks=False)
        self.cache.store(f.path, os.lstat(target), Digest(f.content_id, f.chunks))
        return True

    def _replace(self, tmp: str, target: str, rel: str, created: set[str]) -> None:
        """Put ``tmp`` (verified) at ``target``; callers only get here when what is there differs."""
        wanted = "link" if os.path.islink(tmp) else "file"
        if local_decision(_kind(target), wanted, ours=rel in self._ours) == SET_ASIDE:
            self._set_aside(rel, target)
        existed = os.path.lexists(target)
        os.replace(tmp, target)
        with self._lock:
            self._ours.add(rel)
            if not existed:
                created.add(rel)

    def _set_aside(self, rel: str, target: str, *, move: bool = False) -> None:
        """Keep what is at ``target`` under the kept directory before restore puts the checkpoint's
        version there: a hard link for a file or link (the target is then swapped in by one atomic
        rename, so a crash leaves both), a rename for a directory or with ``move``, a copy across
        file systems."""
        with self._lock:
            for attempt in range(1, 101):
                base = kept_dir(self.kept_label, attempt)
                kept, dest = f"{base}/{rel}", os.path.join(self.root, base, rel)
                # A directory another restore made (another run in this workdir) is never mixed into.
                fresh = base in self._kept_dirs or not os.path.lexists(os.path.join(self.root, base))
                if fresh and not os.path.lexists(dest) and _make_parents(self.root, kept):
                    self._kept_dirs.add(base)
                    break
            else:
                raise OSError(
                    f"cannot set {rel!r} aside under {os.path.join(self.root, KEPT_DIR)}: it is not a directory the "
                    "agent can write to; move it away (nothing was overwritten)"
                )
            if move or (os.path.isdir(target) and not os.path.islink(target)):
                _move(target, dest)
            else:
                try:
                    os.link(target, dest, follow_symlinks=False)
                except OSError:
                    _move(target, dest)
            self.set_aside.append((rel, kept))

    def _remove_created(self, created: set[str], keep: set[str]) -> None:
        for rel in sorted(created - keep, key=lambda p: p.count("/"), reverse=True):
            path = os.path.join(self.root, rel)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass


def plan_pack_reads(
    files: list[FileEntry], gap: int = RANGE_MERGE_GAP, longest: int = RANGE_MAX
) -> list[list[FileEntry]]:
    """Files of one pack grouped into runs that one ranged GET each covers, in pack order.

    Neighbours closer than ``gap`` share a GET unless the run would exceed ``longest`` bytes;
    files that share bytes (deduplicated) share a run."""
    runs: list[list[FileEntry]] = []
    start = end = -1
    for f in sorted(files, key=lambda f: (f.offset, f.size)):
        if runs and (f.offset < end or (f.offset <= end + gap and f.offset + f.size - start <= longest)):
            runs[-1].append(f)
            end = max(end, f.offset + f.size)
        else:
            runs.append([f])
            start, end = f.offset, f.offset + f.size
    return runs


def _same_bytes(path: str, f: FileEntry, chunk_size: int) -> bool:
    """Whether a local file holds an entry's bytes (one read: by chunks for a chunked file)."""
    if not f.chunks:
        return sha256_file(path) == f.sha256
    with open(path, "rb", buffering=0) as fh:
        for expected in f.chunks:
            if hashlib.sha256(fh.read(chunk_size)).hexdigest() != expected:
                return False
    return True


def _check_layout(manifest: Manifest) -> None:
    """A path cannot be both a file (or link) and the parent of another path."""
    leaves = {f.path for f in manifest.files} | {s.path for s in manifest.links}
    for path in [*leaves, *(d.path for d in manifest.dirs)]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in leaves:
                raise ManifestError(f"manifest {manifest.name}: {path!r} lies under the file {'/'.join(parts[:i])!r}")


def _kind(path: str) -> str | None:
    """What is at ``path``, for ``local_decision``: file, dir, link, other, or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "link" if stat.S_ISLNK(mode) else "other"


def _make_parents(root: str, rel: str) -> bool:
    """Create the directories above ``rel`` without following a symlink; False if one is not a directory."""
    current = root
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            if _kind(current) != "dir":
                return False
    return True


def _move(src: str, dest: str) -> None:
    """Rename, or copy then remove across file systems (a mount inside the workdir)."""
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dest, symlinks=True)
            shutil.rmtree(src)
        else:
            shutil.copy2(src, dest, follow_symlinks=False)
            os.unlink(src)


def _write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write ``data`` at ``offset`` of a file already truncated to its full size, skipping every whole
    block of zeros: those stay holes, so a sparse file restores sparse instead of filling the disk."""
    view = memoryview(data)
    for start, end in _data_runs(view):
        while start < end:
            start += os.pwrite(fd, view[start:end], offset + start)


def _data_runs(view: memoryview, block: int = SPARSE_BLOCK) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of ``view`` to write: everything but whole ``block``-sized zero blocks."""
    start = None
    for i in range(0, len(view), block):
        piece = view[i : i + block]
        if len(piece) == block and bytes(piece) == _ZERO_BLOCK:
            if start is not None:
                yield start, i
                start = None
        elif start is None:
            start = i
    if start is not None:
        yield start, len(view)


def _recorded_step(extra: object) -> int | None:
    """The progress step a manifest's ``extra`` records (see Syncer.progress), or None."""
    progress = extra.get("progress") if isinstance(extra, dict) else None
    done = progress.get("done") if isinstance(progress, dict) else None
    return done if isinstance(done, int) and not isinstance(done, bool) else None


def _temp_name(target: str) -> str:
    """A temporary name beside ``target``, of fixed length whatever the target's (NAME_MAX is 255 bytes)."""
    return os.path.join(os.path.dirname(target), f"{TEMP_MARKER}-{uuid.uuid4().hex[:8]}")


def _directories(manifest: Manifest) -> list[str]:
    """Every directory the manifest needs, parents before children."""
    needed = {d.path for d in manifest.dirs}
    for path in [*(f.path for f in manifest.files), *(s.path for s in manifest.links), *needed]:
        parts = path.split("/")
        needed.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(needed, key=lambda p: (p.count("/"), p))


def _run_all(pool: ThreadPoolExecutor, tasks: list[tuple]) -> list:
    """Run ``(fn, *args)`` tasks; results in order; the first error cancels the rest and is raised."""
    futures = [pool.submit(fn, *args) for fn, *args in tasks]
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for fut in done:
        failure = fut.exception()
        if failure is not None:
            for other in futures:
                other.cancel()
            raise failure
    return [f.result() for f in futures]


class _Partial:
    """A large file being assembled from chunks under a temporary name."""

    def __init__(self, entry: FileEntry, target: str, tmp: str, fd: int) -> None:
        self.entry, self.target, self.tmp, self.fd = entry, target, tmp, fd

    @classmethod
    def open(cls, entry: FileEntry, target: str) -> _Partial:
        tmp = _temp_name(target)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, entry.size)
        return cls(entry, target, tmp, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close, and remove the temporary file unless it was installed."""
        self.close()
        if self.tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
