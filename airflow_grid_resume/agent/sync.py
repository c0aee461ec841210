"""Making the execution directory durable: hash what changed, upload new content, commit a manifest.

Objects are content addressed, so bytes already in the run (from any session) are never sent
again. The manifest is written last, once, with a conditional write: a sync cut off half way
leaves only unreferenced objects behind, never a manifest that cannot be restored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.manifest import (
    DEFAULT_CHUNK_SIZE,
    DirEntry,
    FileEntry,
    LinkEntry,
    Manifest,
    chunk_length,
    sort_entries,
)
from airflow_grid_resume.agent.scan import Digest, HashCache, PathFilter, StatKey, now_ns, walk

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024
# Objects at least this large are looked up (HEAD) before upload, so identical bytes stored by an
# earlier session are not sent again even when the restored manifest did not reference them.
HEAD_BEFORE_PUT = 1024 * 1024


class FileChanged(Exception):
    """The file changed while it was being read; its bytes are not one consistent version."""


class SyncCancelled(Exception):
    pass


@dataclass
class SyncResult:
    manifest: Manifest | None
    committed: bool
    files: int = 0
    files_hashed: int = 0
    objects_uploaded: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    unstable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        what = f"manifest {self.manifest.name}" if self.committed and self.manifest else "no change"
        return (
            f"{what}: {self.files} files, {self.files_hashed} hashed, {self.objects_uploaded} objects "
            f"({_mib(self.bytes_uploaded)}) uploaded in {self.seconds:.1f} s"
        )


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


class Syncer:
    """Syncs one workdir into one run for one session. Thread-safe: one sync at a time."""

    def __init__(
        self,
        ledger: RunLedger,
        root: str,
        *,
        session: int,
        path_filter: PathFilter | None = None,
        cache: HashCache | None = None,
        parallelism: int = 16,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        last_manifest: Manifest | None = None,
        known_objects: dict[str, int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.root = root
        self.session = session
        self.filter = path_filter or PathFilter()
        self.cache = cache or HashCache()
        self.parallelism = parallelism
        self.chunk_size = chunk_size
        self.last_manifest = last_manifest
        self.seq = 0
        # Objects known to be stored (sha256 -> size): seeded from the restored manifest, whose
        # objects were just verified, and grown by every upload. Unknown large objects are
        # checked with HEAD before upload; small ones are cheaper to send than to ask about.
        self._known: dict[str, int] = dict(known_objects or {})
        self._known_lock = threading.Lock()
        self._lock = threading.Lock()
        # Throughput of the last sync that uploaded data, for the final-sync estimate.
        self.upload_bytes_per_s: float | None = None
        self.largest_upload = 0
        self.last_upload = 0  # bytes the last sync uploaded: about one checkpoint

    def estimated_seconds(self, floor: float) -> float:
        """What a final sync is expected to need: the largest upload so far at the measured rate."""
        if not self.upload_bytes_per_s or not self.largest_upload:
            return floor
        return max(floor, 1.5 * self.largest_upload / self.upload_bytes_per_s)

    def pending_bytes(self) -> int:
        """Bytes of files changed since they were last hashed (a stat walk, no reads): what a sync now
        would have to upload at most."""
        tree = walk(self.root, self.filter)
        return sum(st.st_size for rel, st in tree.files.items() if not self.cache.lookup(rel, st))

    def sync(self, reason: str, cancel: threading.Event | None = None) -> SyncResult:
        with self._lock:
            return self._sync(reason, cancel or threading.Event())

    def _sync(self, reason: str, cancel: threading.Event) -> SyncResult:
        started = time.monotonic()
        tree = walk(self.root, self.filter)
        for rel in tree.skipped:
            log.warning("not syncing %s: not a regular file, directory or symlink", rel)
        entries: dict[str, FileEntry] = {}
        to_hash: list[tuple[str, os.stat_result]] = []
        for rel, st in tree.files.items():
            digest = self.cache.lookup(rel, st)
            if digest:
                entries[rel] = _entry(rel, st, digest)
            else:
                to_hash.append((rel, st))
        result = SyncResult(manifest=None, committed=False, files=len(tree.files), files_hashed=len(to_hash))
        counters = _Counters()
        if to_hash:
            self._hash_and_upload(to_hash, entries, result, counters, cancel)
        if cancel.is_set():
            raise SyncCancelled()
        result.objects_uploaded, result.bytes_uploaded = counters.objects, counters.bytes
        upload_seconds = counters.upload_seconds
        self.seq += 1
        manifest = Manifest(
            session=self.session,
            seq=self.seq,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            reason=reason,
            chunk_size=self.chunk_size,
            files=sort_entries(entries.values()),
            links=tuple(LinkEntry(p, t) for p, t in sorted(tree.links.items())),
            dirs=tuple(DirEntry(p, m) for p, m in sorted(tree.dirs.items())),
        )
        if manifest.same_content(self.last_manifest):
            self.seq -= 1
            result.manifest = self.last_manifest
        else:
            self.ledger.commit_manifest(manifest)
            self.last_manifest = manifest
            result.manifest, result.committed = manifest, True
        result.seconds = time.monotonic() - started
        if counters.bytes >= 4 * 1024 * 1024 and upload_seconds > 0:
            self.upload_bytes_per_s = counters.bytes / (result.seconds or upload_seconds)
            self.largest_upload = max(self.largest_upload, counters.bytes)
        if counters.bytes:
            self.last_upload = counters.bytes
        return result

    # -- hashing and uploading ----------------------------------------------------------------
    def _hash_and_upload(
        self,
        to_hash: list[tuple[str, os.stat_result]],
        entries: dict[str, FileEntry],
        result: SyncResult,
        counters: _Counters,
        cancel: threading.Event,
    ) -> None:
        """Hash and upload in one pool. A large file is one whole-file hashing task plus one task
        per chunk, all independent, so no worker ever waits on another (no pool deadlock)."""
        previous = {f.path: f for f in self.last_manifest.files} if self.last_manifest else {}
        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="grid-sync")
        jobs: list[tuple[str, os.stat_result, int, Future, list[Future]]] = []
        failed = False
        try:
            for rel, st in to_hash:
                hashed_at = now_ns()
                if st.st_size <= self.chunk_size:
                    small = pool.submit(self._piece, rel, st, 0, st.st_size, counters, cancel)
                    jobs.append((rel, st, hashed_at, small, []))
                else:
                    n = -(-st.st_size // self.chunk_size)
                    chunks = [
                        pool.submit(
                            self._piece,
                            rel,
                            st,
                            i * self.chunk_size,
                            chunk_length(st.st_size, self.chunk_size, i),
                            counters,
                            cancel,
                        )
                        for i in range(n)
                    ]
                    jobs.append((rel, st, hashed_at, pool.submit(self._whole_sha256, rel, st, cancel), chunks))
            all_futures = [f for job in jobs for f in (job[3], *job[4])]
            done, _ = wait(all_futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = fut.exception()
                if exc is not None and not isinstance(exc, FileChanged):
                    failed = True
                    raise exc
            wait(all_futures)
            for rel, st, hashed_at, main, chunks in jobs:
                errors = [f.exception() for f in (main, *chunks) if f.exception() is not None]
                if errors:
                    if not all(isinstance(e, FileChanged) for e in errors):
                        failed = True
                        raise next(e for e in errors if not isinstance(e, FileChanged))
                    result.unstable.append(rel)
                    if rel in previous:
                        entries[rel] = previous[rel]
                        log.warning("%s changed while it was read; keeping its previous version", rel)
                    else:
                        log.warning("%s changed while it was read; it is left out of this checkpoint", rel)
                    continue
                digest = Digest(main.result(), tuple(f.result() for f in chunks))
                entries[rel] = _entry(rel, st, digest)
                self.cache.store(rel, st, digest, hashed_at_ns=hashed_at)
        finally:
            pool.shutdown(wait=True, cancel_futures=failed or cancel.is_set())

    def _open(self, rel: str, st: os.stat_result, cancel: threading.Event) -> int:
        if cancel.is_set():
            raise SyncCancelled()
        try:
            fd = os.open(os.path.join(self.root, rel), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, OSError) as exc:
            raise FileChanged(rel) from exc
        try:
            _check_same(rel, st, os.fstat(fd))
        except FileChanged:
            os.close(fd)
            raise
        return fd

    def _piece(
        self, rel: str, st: os.stat_result, offset: int, length: int, counters: _Counters, cancel: threading.Event
    ) -> str:
        """Read, hash and upload one object: a whole small file, or one chunk of a large one."""
        fd = self._open(rel, st, cancel)
        try:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise FileChanged(rel)
            _check_same(rel, st, os.fstat(fd))
        finally:
            os.close(fd)
        sha = hashlib.sha256(data).hexdigest()
        self._upload_if_new(sha, data, counters)
        return sha

    def _whole_sha256(self, rel: str, st: os.stat_result, cancel: threading.Event) -> str:
        fd = self._open(rel, st, cancel)
        try:
            whole = hashlib.sha256()
            while block := os.read(fd, READ_BLOCK * 8):
                whole.update(block)
            _check_same(rel, st, os.fstat(fd))
        finally:
            os.close(fd)
        return whole.hexdigest()

    def _upload_if_new(self, sha: str, data: bytes, counters: _Counters) -> None:
        with self._known_lock:
            if self._known.get(sha) == len(data) or sha in counters.in_flight:
                return
            counters.in_flight.add(sha)
        started = time.monotonic()
        try:
            stored = len(data) >= HEAD_BEFORE_PUT and self.ledger.object_size(sha) == len(data)
            if not stored:
                self.ledger.put_blob(sha, data)
        finally:
            with self._known_lock:
                counters.in_flight.discard(sha)
        with self._known_lock:
            self._known[sha] = len(data)
            if not stored:
                counters.objects += 1
                counters.bytes += len(data)
                counters.upload_seconds += time.monotonic() - started


class _Counters:
    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0
        self.upload_seconds = 0.0
        self.in_flight: set[str] = set()


def _entry(rel: str, st: os.stat_result, digest: Digest) -> FileEntry:
    return FileEntry(rel, st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest.sha256, digest.chunks)


def _check_same(rel: str, before: os.stat_result, after: os.stat_result) -> None:
    a, b = StatKey.of(before), StatKey.of(after)
    if (a.size, a.mtime_ns, a.ctime_ns, a.ino) != (b.size, b.mtime_ns, b.ctime_ns, b.ino):
        raise FileChanged(rel)
