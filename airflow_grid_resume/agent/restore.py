"""Bringing a workdir to the newest checkpoint of a run that fully verifies.

Manifests are tried newest first. One that is malformed or has unsafe paths is rejected before
anything is written; one whose objects turn out missing or corrupt is abandoned, the files it
created are removed, and the next older manifest is tried, each fallback logged with its reason.
No LIST of the object store is needed: a missing object shows up as a 404 on its GET.
Every file is written under a temporary name, verified, and renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from airflow_grid_resume.agent.errors import (
    CorruptObjectError,
    ManifestError,
    NoRestorableCheckpointError,
    UnsafePathError,
)
from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.manifest import FileEntry, Manifest, chunk_length
from airflow_grid_resume.agent.paths import TEMP_MARKER, safe_target
from airflow_grid_resume.agent.scan import Digest, HashCache, sha256_file

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    manifest: Manifest | None
    files_written: int = 0
    files_kept: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    fallbacks: list[tuple[str, str]] = field(default_factory=list)

    def verified_objects(self) -> dict[str, int]:
        """sha256 -> size of every object the restored manifest uses: all present and verified."""
        if self.manifest is None:
            return {}
        out = {}
        for f in self.manifest.files:
            for i, h in enumerate(f.object_hashes()):
                out[h] = chunk_length(f.size, self.manifest.chunk_size, i) if f.chunks else f.size
        return out

    def summary(self) -> str:
        if self.manifest is None:
            return "no checkpoint in the run yet: starting fresh"
        return (
            f"restored manifest {self.manifest.name} ({len(self.manifest.files)} files, "
            f"{self.manifest.total_bytes / 1048576:.1f} MiB): {self.files_written} written, "
            f"{self.files_kept} already present, {self.bytes_downloaded / 1048576:.1f} MiB downloaded "
            f"in {self.seconds:.1f} s"
        )


class Restorer:
    def __init__(self, ledger: RunLedger, root: str, *, parallelism: int = 16, cache: HashCache | None = None) -> None:
        self.ledger = ledger
        self.root = os.path.abspath(root)
        self.parallelism = parallelism
        self.cache = cache if cache is not None else HashCache()
        self._lock = threading.Lock()

    def restore(self) -> RestoreResult:
        """Restore the newest verifiable manifest; raise if manifests exist but none verifies."""
        started = time.monotonic()
        stored = self.ledger.list_manifests()
        result = RestoreResult(manifest=None)
        if not stored:
            return result
        for candidate in stored:
            created: set[str] = set()
            try:
                manifest = self.ledger.read_manifest(candidate)
                _check_layout(manifest)
                self._apply(manifest, result, created)
            except (ManifestError, CorruptObjectError, UnsafePathError) as exc:
                self._remove_created(created, keep=set())
                result.fallbacks.append((candidate.name, str(exc)))
                log.error("cannot restore manifest %s: %s", candidate.name, exc)
                continue
            result.manifest = manifest
            result.seconds = time.monotonic() - started
            if result.fallbacks:
                log.warning(
                    "restored the older manifest %s after %d newer one(s) failed to verify: %s",
                    manifest.name,
                    len(result.fallbacks),
                    ", ".join(name for name, _ in result.fallbacks),
                )
            return result
        raise NoRestorableCheckpointError(
            f"the run has {len(stored)} checkpoint manifest(s) but none verifies "
            f"({'; '.join(f'{n}: {why}' for n, why in result.fallbacks[:3])}). Refusing to start over, "
            "which would silently lose the run's work."
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
            kept = _run_all(pool, [(self._already_there, f, safe_target(self.root, f.path)) for f in manifest.files])
            todo = [f for f, ok in zip(manifest.files, kept, strict=True) if not ok]
            result.files_kept += len(manifest.files) - len(todo)
            tasks: list[tuple] = []
            for f in todo:
                if f.chunks:
                    partial = _Partial.open(f, safe_target(self.root, f.path))
                    partials.append(partial)
                    tasks += [(self._fetch_chunk, partial, i, manifest.chunk_size) for i in range(len(f.chunks))]
                else:
                    tasks.append((self._restore_small, f, created))
            downloaded = _run_all(pool, tasks)
            result.bytes_downloaded += sum(downloaded)
            _run_all(pool, [(self._finish_large, p, created) for p in partials])
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
        if os.path.lexists(target) and not (os.path.isdir(target) and not os.path.islink(target)):
            os.unlink(target)
        if not os.path.exists(target):
            os.mkdir(target, 0o755)
            created.add(rel)

    def _restore_small(self, f: FileEntry, created: set[str]) -> int:
        target = safe_target(self.root, f.path)
        data = self.ledger.get_blob(f.sha256)
        if len(data) != f.size:
            raise CorruptObjectError(f"object {f.sha256} for {f.path!r} has {len(data)} bytes, expected {f.size}")
        tmp = _temp_name(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
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
        os.pwrite(partial.fd, data, index * chunk_size)
        return len(data)

    def _finish_large(self, partial: _Partial, created: set[str]) -> None:
        f = partial.entry
        if sha256_file(partial.tmp) != f.sha256:
            raise CorruptObjectError(f"file {f.path!r} does not match its sha256 once assembled")
        os.fchmod(partial.fd, f.mode)
        partial.close()
        self._install(partial.tmp, partial.target, f, created)
        partial.tmp = ""

    def _install(self, tmp: str, target: str, f: FileEntry, created: set[str]) -> None:
        os.utime(tmp, ns=(f.mtime_ns, f.mtime_ns))
        self._replace(tmp, target, f.path, created)
        self.cache.store(f.path, os.lstat(target), Digest(f.sha256, f.chunks))

    def _already_there(self, f: FileEntry, target: str) -> bool:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
            return False
        if self.cache.lookup(f.path, st) is None and sha256_file(target) != f.sha256:
            return False
        if stat.S_IMODE(st.st_mode) != f.mode:
            os.chmod(target, f.mode)
        if st.st_mtime_ns != f.mtime_ns:
            os.utime(target, ns=(f.mtime_ns, f.mtime_ns), follow_symlinks=False)
        self.cache.store(f.path, os.lstat(target), Digest(f.sha256, f.chunks))
        return True

    def _replace(self, tmp: str, target: str, rel: str, created: set[str]) -> None:
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        existed = os.path.lexists(target)
        os.replace(tmp, target)
        if not existed:
            with self._lock:
                created.add(rel)

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


def _check_layout(manifest: Manifest) -> None:
    """A path cannot be both a file (or link) and the parent of another path."""
    leaves = {f.path for f in manifest.files} | {s.path for s in manifest.links}
    for path in [*leaves, *(d.path for d in manifest.dirs)]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in leaves:
                raise ManifestError(f"manifest {manifest.name}: {path!r} lies under the file {'/'.join(parts[:i])!r}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _temp_name(target: str) -> str:
    return f"{target}{TEMP_MARKER}-{uuid.uuid4().hex[:8]}"


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
        if fut.exception() is not None:
            for other in futures:
                other.cancel()
            raise fut.exception()  # type: ignore[misc]
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
