"""Making the execution directory durable: hash what changed, upload new content, commit a manifest.

Small files go into content-addressed packs, larger ones into content-addressed objects (whole, or
8 MiB chunks), so bytes the last checkpoint already holds are never sent again and a sync that
changes a few small files writes one small pack. The manifest is written last, once, with a
conditional write, then the ``latest.json`` pointer: a sync cut off half way leaves only
unreferenced packs and objects behind, never a manifest that cannot be restored.

Deduplication is against the last committed manifest only (and within the sync): that is what
lets ``grid-resume gc`` run during a sync (see docs/ledger.md, "Garbage collection"). Its other half
is here too: a sync whose first upload is older than ``SYNC_COMMIT_WINDOW`` re-dates its uploads
before committing, and a key that already existed when the sync wrote it (bytes an older checkpoint
held, which a gc may have been deleting at that moment) is checked after the commit; one found
missing is uploaded again at once, in a new manifest, and never reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_grid_resume.agent.markers import changed_in_capture, unstable_action
from airflow_grid_resume.agent.scan import Digest, HashCache, PathFilter, StatKey, now_ns, walk
from airflow_grid_resume.ledger.checkpoints import MARKED, is_complete, newest_complete_kept
from airflow_grid_resume.ledger.compat import zip_strict
from airflow_grid_resume.ledger.errors import UnstorablePathError
from airflow_grid_resume.ledger.gc import SYNC_COMMIT_WINDOW
from airflow_grid_resume.ledger.manifest import (
    DEFAULT_CHUNK_SIZE,
    FORMAT_VERSION,
    SMALL_FILE,
    DirEntry,
    FileEntry,
    LinkEntry,
    Manifest,
    as_current,
    chunk_length,
    chunk_root,
    sort_entries,
)
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger

log = logging.getLogger(__name__)

# A pack is sealed and uploaded once it holds this much (see docs/ledger.md, "Packs").
PACK_TARGET = 16 * 1024 * 1024
# Manifests a session keeps of its own: older ones are deleted after each commit (gc takes their
# unreferenced bytes). Enough for the restore fallback chain and the run's timeline.
MANIFESTS_PER_SESSION = 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# A file seen changing while it was read is read again (from a fresh stat) this many times.
FILE_RETRIES = 3


class FileChanged(Exception):
    """The file changed while it was being read; its bytes are not one consistent version."""


class SyncCancelled(Exception):
    pass


class _Redo(Exception):
    """Keys this sync relies on are gone (a gc deleted them): hash and upload their files again.
    ``committed``: the manifest that references them is committed already."""

    def __init__(self, message: str, *, committed: bool) -> None:
        super().__init__(message)
        self.committed = committed


# Rounds of one sync() when keys it relies on go missing under it (each uploads the missing bytes again).
MAX_ROUNDS = 3


@dataclass
class SyncResult:
    manifest: Manifest | None
    committed: bool
    files: int = 0
    files_hashed: int = 0
    objects_uploaded: int = 0
    packs_uploaded: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    unstable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        what = f"manifest {self.manifest.name}" if self.committed and self.manifest else "no change"
        return (
            f"{what}: {self.files} files, {self.files_hashed} hashed, {self.packs_uploaded} packs and "
            f"{self.objects_uploaded} objects ({_mib(self.bytes_uploaded)}) uploaded in {self.seconds:.1f} s"
        )


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


class _Pack:
    """A pack being filled; its name (the sha256 of its bytes) is known once it is sealed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.sha = ""


# Where a blob is: (pack, offset) for a packed one; (None, 0) for an object of its own.
_Where = tuple["_Pack | str | None", int]


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
        pack_target: int = PACK_TARGET,
        keep_manifests: int = MANIFESTS_PER_SESSION,
        progress: Callable[[], dict | None] | None = None,
        commit_window: float = SYNC_COMMIT_WINDOW,
    ) -> None:
        self.ledger = ledger
        self.root = root
        self.session = session
        self.filter = path_filter or PathFilter()
        self.cache = cache or HashCache()
        self.parallelism = parallelism
        self.chunk_size = chunk_size
        self.pack_target = pack_target
        # A file is packed below this size; never above the chunk size (tests use tiny chunks).
        self.small_file = min(SMALL_FILE, chunk_size)
        self.keep_manifests = keep_manifests
        self.commit_window = commit_window
        self.last_manifest = last_manifest
        # The script's reported progress, recorded in each manifest (``extra.progress``) so a restore
        # that falls back to an older checkpoint can say how many steps that costs.
        self.progress = progress
        self.seq = 0
        # sha256 -> where the last committed manifest (restored and verified, or our own) holds
        # those bytes. Only these are reused: gc never deletes what the newest manifest references.
        self._where: dict[str, _Where] = _locations(last_manifest)
        self._last_index: tuple[Manifest | None, dict[str, FileEntry]] = (None, {})
        self._pending: dict[str, _Where] = {}
        self._uploaded: dict[str, float] = {}  # key -> when this sync wrote it (monotonic)
        self._rewritten: set[str] = set()  # keys this sync wrote that existed already (gc may be deleting them)
        self._where_partial = False  # _forget dropped keys from _where
        self._lock_where = threading.Lock()
        self._pack = _Pack()
        self._lock = threading.Lock()
        self._pointer_etag: str | None = None
        self._committed: list[str] = []  # this session's manifest keys, oldest first
        self._committed_extras: list[dict] = []  # and their extra, for what retention must keep
        self._can_delete = True
        self._root = root  # what the sync under way reads: the workdir, or a capture of it
        self.unstable_skips = 0  # periodic syncs in a row that committed nothing (a file kept changing)
        # Throughput of the last sync that uploaded data, for the final-sync estimate.
        self.upload_bytes_per_s: float | None = None
        self.largest_upload = 0
        self.last_upload = 0  # bytes the last sync uploaded: about one checkpoint
        # Every byte this syncer sent, committed or not: what a session in another region pays transfer for.
        self.bytes_sent = 0

    def pending_bytes(self) -> int:
        """Bytes of files changed since they were last hashed (a stat walk, no reads): what a sync now
        would have to upload at most."""
        tree = walk(self.root, self.filter)
        return sum(st.st_size for rel, st in tree.files.items() if not self.cache.lookup(rel, st))

    def sync(
        self,
        reason: str,
        cancel: threading.Event | None = None,
        *,
        root: str | None = None,
        extra: dict | None = None,
        expected: dict[str, tuple[int, int]] | None = None,
    ) -> SyncResult:
        """Sync the workdir (or ``root``: a capture of it, whose files must still have the (size, mtime_ns)
        of ``expected``) into a manifest with ``extra``."""
        with self._lock:
            committed = False  # by an earlier round, whose manifest a later one made whole again
            self._root = root or self.root  # read only within a sync
            for round_ in range(1, MAX_ROUNDS + 1):
                self._pending, self._pack, self._uploaded, self._rewritten = {}, _Pack(), {}, set()
                try:
                    result = self._sync(reason, cancel or threading.Event(), extra or {}, expected)
                    if committed and not result.committed:  # same content: the keys were re-created in place
                        result.committed, result.manifest = True, self.last_manifest
                    return result
                except _Redo as redo:
                    committed = committed or redo.committed
                    if round_ == MAX_ROUNDS:
                        raise RuntimeError(f"sync gave up after {MAX_ROUNDS} rounds: {redo}") from redo
                    log.warning("%s: uploading them again", redo)
                finally:
                    self._pending, self._pack = {}, _Pack()
            raise AssertionError("unreachable")

    def _sync(
        self, reason: str, cancel: threading.Event, extra: dict, expected: dict[str, tuple[int, int]] | None
    ) -> SyncResult:
        started = time.monotonic()
        progress = self.progress() if self.progress else None  # the step reached when this sync began
        tree = walk(self._root, self.filter)
        if tree.unstorable:
            raise UnstorablePathError(tree.unstorable)
        for rel in tree.skipped:
            log.warning("not syncing %s: not a regular file, directory or symlink", rel)
        entries: dict[str, FileEntry | tuple] = {}
        to_hash: list[tuple[str, os.stat_result]] = []
        # Unchanged files reuse the last manifest's own entries (same bytes, same place): no new
        # objects, and comparing the new manifest with the last one is mostly identity checks.
        last = self._last_entries()
        for rel, st in tree.files.items():
            digest = self.cache.lookup(rel, st)
            prev = last.get(rel)
            if (
                digest is not None
                and prev is not None
                and prev.sha256 == digest.sha256
                and prev.mtime_ns == st.st_mtime_ns
                and prev.size == st.st_size
                and prev.mode == stat.S_IMODE(st.st_mode)
            ):
                entries[rel] = prev
                continue
            entry = self._stored_entry(rel, st, digest) if digest else None
            if entry is not None:
                entries[rel] = entry
            elif st.st_size == 0:
                entries[rel] = _entry(rel, st, EMPTY_SHA256)
            else:
                to_hash.append((rel, st))
        result = SyncResult(manifest=None, committed=False, files=len(tree.files), files_hashed=len(to_hash))
        counters = _Counters()
        changed = self._hash_and_upload(to_hash, entries, counters, cancel) if to_hash else []
        for _ in range(FILE_RETRIES):
            if not changed:
                break
            changed = self._hash_and_upload(self._fresh_stats(changed, entries), entries, counters, cancel)
            result.files_hashed += len(changed)
        if cancel.is_set():
            raise SyncCancelled()
        if expected is not None:  # a capture: its files must be what they were when captured
            changed += [rel for rel, e in entries.items() if changed_in_capture(expected.get(rel), _size_mtime(e))]
        if changed:
            result.unstable = sorted(set(changed))
            if unstable_action(reason, self.unstable_skips) == "skip":
                if reason != MARKED:
                    self.unstable_skips += 1
                log.warning(
                    "%s changed while the %s sync read it (or since the capture): nothing committed, the last "
                    "checkpoint stays the newest%s",
                    ", ".join(result.unstable[:5]),
                    reason,
                    " (write files by rename: a file written in place can tear a marked checkpoint)"
                    if reason == MARKED
                    else "; the next sync tries again",
                )
                result.seconds = time.monotonic() - started
                return result
            self._keep_previous(result.unstable, entries)
        if reason != MARKED:
            self.unstable_skips = 0
        if self._pack.buf:
            self._upload_pack(self._pack, counters)
        result.objects_uploaded, result.packs_uploaded = counters.objects, counters.packs
        result.bytes_uploaded = counters.bytes
        files = [e if isinstance(e, FileEntry) else _resolve(*e) for e in entries.values()]
        self.seq += 1
        manifest = Manifest(
            session=self.session,
            seq=self.seq,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            reason=reason,
            chunk_size=self.chunk_size,
            files=sort_entries(files),
            links=tuple(LinkEntry(p, t) for p, t in sorted(tree.links.items())),
            dirs=tuple(DirEntry(p, m) for p, m in sorted(tree.dirs.items())),
            extra={**({"progress": {"done": progress["done"]}} if progress and "done" in progress else {}), **extra},
        )
        last_extra = self.last_manifest.extra if self.last_manifest else {}
        if manifest.same_content(self.last_manifest) and (is_complete(last_extra) or not is_complete(extra)):
            self.seq -= 1
            result.manifest = self.last_manifest
            if self._where_partial:  # the keys _forget dropped were uploaded again this round, in place
                self._where, self._where_partial = _locations(self.last_manifest), False
        else:
            try:
                self._redate_old_uploads(manifest)
            except _Redo:
                self.seq -= 1  # not committed: the next round takes the number
                raise
            key = self.ledger.commit_manifest(manifest)
            self.last_manifest = manifest
            self._where, self._where_partial = _locations(manifest), False
            result.manifest, result.committed = manifest, True
            self._advance_pointer(manifest)
            self._committed.append(key)
            self._committed_extras.append(dict(manifest.extra))
            self._forget_old_manifests()
            self._check_rewritten(manifest)
        result.seconds = time.monotonic() - started
        if counters.bytes >= 4 * 1024 * 1024 and counters.upload_seconds > 0:
            self.upload_bytes_per_s = counters.bytes / (result.seconds or counters.upload_seconds)
            self.largest_upload = max(self.largest_upload, counters.bytes)
        if counters.bytes:
            self.last_upload = counters.bytes
        return result

    def _redate_old_uploads(self, manifest: Manifest) -> None:
        """gc deletes unreferenced bytes older than its grace period: what this sync uploaded longer
        than ``commit_window`` ago gets today's date before the manifest that references it is
        committed (a copy onto itself); one already gone is uploaded again (``_Redo``)."""
        now = time.monotonic()
        old = [k for k, at in self._uploaded.items() if now - at >= self.commit_window]
        if not old:
            return
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="grid-redate") as pool:
            gone = {k for k, ok in zip_strict(old, pool.map(self._refresh, old)) if not ok}
        log.info("the sync took longer than %.0f s: re-dated %d uploads", self.commit_window, len(old) - len(gone))
        if gone:
            self._forget(manifest, gone)
            raise _Redo(f"{len(gone)} key(s) this sync uploaded were deleted before it committed", committed=False)

    def _check_rewritten(self, manifest: Manifest) -> None:
        """After the commit: the keys this sync wrote over existing ones (old bytes coming back) may
        have been deleted by a gc that judged them by their old date between its HEAD and its DELETE.
        One that is gone makes this manifest unrestorable: forget it and upload it again now."""
        if not self._rewritten:
            return
        keys = sorted(self._rewritten)
        try:
            with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="grid-check") as pool:
                gone = {k for k, at in zip_strict(keys, pool.map(self.ledger.modified, keys)) if at is None}
        except Exception as exc:  # the manifest is committed: never fail the sync now, never reuse unchecked keys
            log.warning("could not check %d re-written key(s), the next sync writes them again: %s", len(keys), exc)
            self._forget(manifest, set(keys))
            return
        if gone:
            self._forget(manifest, gone)
            raise _Redo(
                f"manifest {manifest.name} references {len(gone)} key(s) deleted under this sync", committed=True
            )

    def _refresh(self, key: str) -> bool:
        """Re-date one upload; False when it is gone. A refusal (a bucket policy on CopyObject) keeps
        the upload as it is, with a warning: the sync commits as it would have without the window."""
        try:
            return self.ledger.refresh(key)
        except Exception as exc:
            log.warning("could not re-date %s (gc's grace period counts from its upload): %s", key, exc)
            return True

    def _forget(self, manifest: Manifest, gone: set[str]) -> None:
        """Never reuse ``gone`` keys again: drop them from what the last manifest holds and from the
        hash cache, so the files they held are read, hashed and uploaded by the next round."""
        with self._lock_where:
            for f in manifest.files:
                if any(k in gone for k in self.ledger.blob_keys(f)):
                    self.cache.forget(f.path)
                    for h in (f.sha256, *f.object_hashes()):
                        self._where.pop(h, None)
            self._where_partial = True

    def _last_entries(self) -> dict[str, FileEntry]:
        """path -> entry of the last manifest, when a sync may reuse its entries as they are (format
        1 entries are rewritten: their small files go into packs)."""
        last = self.last_manifest
        if last is None or last.version != FORMAT_VERSION or last.chunk_size != self.chunk_size:
            return {}
        if self._last_index[0] is not last:
            self._last_index = (last, {f.path: f for f in last.files})
        return self._last_index[1]

    def _stored_entry(self, rel: str, st: os.stat_result, digest: Digest) -> FileEntry | None:
        """The entry of an unchanged file whose bytes the last manifest holds; None to read it again."""
        if st.st_size == 0:
            return _entry(rel, st, EMPTY_SHA256)
        if digest.chunks:
            if all(c in self._where for c in digest.chunks):
                return _entry(rel, st, digest.sha256, digest.chunks)
            return None
        where = self._where.get(digest.sha256)
        if where is None or (st.st_size < self.small_file) != (where[0] is not None):
            return None
        pack = where[0] if isinstance(where[0], str) else ""  # committed locations name their pack
        return _entry(rel, st, digest.sha256, pack=pack, offset=where[1])

    def _advance_pointer(self, manifest: Manifest) -> None:
        """Best effort: restore finds a newer manifest by a LIST when the pointer lags."""
        try:
            self._pointer_etag = self.ledger.advance_pointer(manifest, self._pointer_etag)
        except ConditionalWriteLost as exc:
            log.warning("latest.json not advanced to %s: %s", manifest.name, exc)
        except Exception as exc:
            self._pointer_etag = None
            log.warning("latest.json not advanced to %s (restore will list manifests): %s", manifest.name, exc)

    def _forget_old_manifests(self) -> None:
        """Keep at most ``keep_manifests`` of this session's manifests (best effort)."""
        if not self._can_delete or self.keep_manifests <= 0 or len(self._committed) <= self.keep_manifests:
            return
        newest_first = self._committed_extras[::-1]
        complete = newest_complete_kept(newest_first, self.keep_manifests)  # a marker run's newest complete one
        keep = {len(self._committed) - 1 - complete} if complete is not None else set()
        cut = len(self._committed) - self.keep_manifests
        old = [key for i, key in enumerate(self._committed[:cut]) if i not in keep]
        kept = [i for i in range(len(self._committed)) if i >= cut or i in keep]
        self._committed = [self._committed[i] for i in kept]
        self._committed_extras = [self._committed_extras[i] for i in kept]
        try:
            self.ledger.delete_keys(old)
        except Exception as exc:
            self._can_delete = False
            log.warning("cannot delete this session's old manifests (needs s3:DeleteObject), keeping all: %s", exc)

    # -- hashing and uploading ----------------------------------------------------------------
    def _fresh_stats(
        self, changed: list[str], entries: dict[str, FileEntry | tuple]
    ) -> list[tuple[str, os.stat_result]]:
        """Files seen changing, stat'ed again to be read again; one that is gone now (or no longer a
        regular file) is not in the workdir any more, so not in the manifest either."""
        again = []
        for rel in changed:
            try:
                st = os.lstat(os.path.join(self._root, rel))
            except FileNotFoundError:
                entries.pop(rel, None)
                continue
            if stat.S_ISREG(st.st_mode):
                again.append((rel, st))
            else:
                entries.pop(rel, None)
        return again

    def _keep_previous(self, unstable: list[str], entries: dict[str, FileEntry | tuple]) -> None:
        """Record files that never read stably as the last manifest had them (new ones are left out)."""
        previous = {f.path: f for f in self.last_manifest.files} if self.last_manifest else {}
        for rel in unstable:
            if rel in previous:
                entries[rel] = as_current(previous[rel])
                log.warning("%s kept changing while it was read; keeping its previous version", rel)
            else:
                entries.pop(rel, None)
                log.warning("%s kept changing while it was read; it is left out of this checkpoint", rel)

    def _hash_and_upload(
        self,
        to_hash: list[tuple[str, os.stat_result]],
        entries: dict[str, FileEntry | tuple],
        counters: _Counters,
        cancel: threading.Event,
    ) -> list[str]:
        """Read, hash and upload in one pool; returns the files seen changing while read (their entries
        are left as they were). A large file is one task per chunk, all independent, so no worker ever
        waits on another (no pool deadlock) and every byte is read once."""
        changed: list[str] = []
        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="grid-sync")
        jobs: list[tuple[str, os.stat_result, int, list[Future]]] = []
        failed = False
        try:
            for rel, st in to_hash:
                hashed_at = now_ns()
                futures: list[Future[Any]]
                if st.st_size < self.small_file:
                    futures = [pool.submit(self._small, rel, st, counters, cancel)]
                elif st.st_size <= self.chunk_size:
                    futures = [pool.submit(self._piece, rel, st, 0, st.st_size, counters, cancel)]
                else:
                    n = -(-st.st_size // self.chunk_size)
                    futures = [
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
                jobs.append((rel, st, hashed_at, futures))
            all_futures = [f for job in jobs for f in job[3]]
            done, _ = wait(all_futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = fut.exception()
                if exc is not None and not isinstance(exc, FileChanged):
                    failed = True
                    raise exc
            wait(all_futures)
            for rel, st, hashed_at, futures in jobs:
                errors = [e for e in (f.exception() for f in futures) if e is not None]
                if errors:
                    if not all(isinstance(e, FileChanged) for e in errors):
                        failed = True
                        raise next(e for e in errors if not isinstance(e, FileChanged))
                    changed.append(rel)
                    continue
                if st.st_size < self.small_file:
                    sha, (pack, offset) = futures[0].result()
                    entries[rel] = (rel, st, sha, pack, offset)
                    self.cache.store(rel, st, Digest(sha, ()), hashed_at_ns=hashed_at)
                    continue
                shas: tuple[str, ...] = tuple(f.result() for f in futures)
                digest = Digest(chunk_root(shas), shas) if st.st_size > self.chunk_size else Digest(shas[0], ())
                entries[rel] = _entry(rel, st, digest.sha256, digest.chunks)
                self.cache.store(rel, st, digest, hashed_at_ns=hashed_at)
        finally:
            pool.shutdown(wait=True, cancel_futures=failed or cancel.is_set())
        return changed

    def _read(self, rel: str, st: os.stat_result, offset: int, length: int, cancel: threading.Event) -> bytes:
        """``length`` bytes at ``offset``, raising FileChanged unless the file stayed the same."""
        if cancel.is_set():
            raise SyncCancelled()
        try:
            fd = os.open(os.path.join(self._root, rel), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise FileChanged(rel) from exc
        try:
            _check_same(rel, st, os.fstat(fd))
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise FileChanged(rel)
            _check_same(rel, st, os.fstat(fd))
        finally:
            os.close(fd)
        return data

    def _small(self, rel: str, st: os.stat_result, counters: _Counters, cancel: threading.Event) -> tuple:
        """Read and hash a small file and place it in the current pack (unless stored already)."""
        data = self._read(rel, st, 0, st.st_size, cancel)
        sha = hashlib.sha256(data).hexdigest()
        sealed = None
        with self._lock_where:
            where = self._where.get(sha) or self._pending.get(sha)
            if where is None or where[0] is None:  # a small file's bytes always go to a pack
                where = (self._pack, len(self._pack.buf))
                self._pack.buf += data
                self._pending[sha] = where
                if len(self._pack.buf) >= self.pack_target:
                    sealed, self._pack = self._pack, _Pack()
        if sealed is not None:
            self._upload_pack(sealed, counters)
        return sha, where

    def _upload_pack(self, pack: _Pack, counters: _Counters) -> None:
        started = time.monotonic()
        data = bytes(pack.buf)
        sha = hashlib.sha256(data).hexdigest()
        self._put(self.ledger.pack_key(sha), data)
        pack.sha = sha
        with self._lock_where:
            counters.packs += 1
            counters.bytes += len(data)
            counters.upload_seconds += time.monotonic() - started

    def _piece(
        self, rel: str, st: os.stat_result, offset: int, length: int, counters: _Counters, cancel: threading.Event
    ) -> str:
        """Read, hash and upload one object: a whole mid-sized file, or one chunk of a large one."""
        data = self._read(rel, st, offset, length, cancel)
        sha = hashlib.sha256(data).hexdigest()
        with self._lock_where:
            if sha in self._where or sha in self._pending:
                return sha
            self._pending[sha] = (None, 0)
        started = time.monotonic()
        try:
            self._put(self.ledger.object_key(sha), data)
        except BaseException:
            with self._lock_where:
                self._pending.pop(sha, None)
            raise
        with self._lock_where:
            counters.objects += 1
            counters.bytes += len(data)
            counters.upload_seconds += time.monotonic() - started
        return sha

    def _put(self, key: str, data: bytes) -> None:
        """Upload content-addressed bytes, noting when, and whether the key existed already."""
        started = time.monotonic()  # S3 dates the object no earlier than this
        new = self.ledger.put_content(key, data)
        with self._lock_where:
            self.bytes_sent += len(data)
            self._uploaded.setdefault(key, started)
            if not new:
                self._rewritten.add(key)


class _Counters:
    def __init__(self) -> None:
        self.objects = 0
        self.packs = 0
        self.bytes = 0
        self.upload_seconds = 0.0


def _locations(manifest: Manifest | None) -> dict[str, _Where]:
    """Where a manifest holds each blob: packed small files and objects (whole files, chunks)."""
    out: dict[str, _Where] = {}
    for f in manifest.files if manifest else ():
        if f.pack:
            out[f.sha256] = (f.pack, f.offset)
        else:
            for h in f.object_hashes():
                out[h] = (None, 0)
    return out


def _resolve(rel: str, st: os.stat_result, sha: str, pack: _Pack | str, offset: int) -> FileEntry:
    name = pack.sha if isinstance(pack, _Pack) else pack
    if not name:
        raise RuntimeError(f"{rel}: its pack was never uploaded")
    return _entry(rel, st, sha, pack=name, offset=offset)


def _entry(
    rel: str, st: os.stat_result, sha: str, chunks: tuple[str, ...] = (), *, pack: str = "", offset: int = 0
) -> FileEntry:
    return FileEntry(rel, st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, sha, chunks, pack, offset)


def _size_mtime(entry: FileEntry | tuple) -> tuple[int, int]:
    """(size, mtime_ns) an entry records (a packed one is still a tuple with its stat)."""
    if isinstance(entry, tuple):
        return entry[1].st_size, entry[1].st_mtime_ns
    return entry.size, entry.mtime_ns


def _check_same(rel: str, before: os.stat_result, after: os.stat_result) -> None:
    a, b = StatKey.of(before), StatKey.of(after)
    if (a.size, a.mtime_ns, a.ctime_ns, a.ino) != (b.size, b.mtime_ns, b.ctime_ns, b.ino):
        raise FileChanged(rel)
