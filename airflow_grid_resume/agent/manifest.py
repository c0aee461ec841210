"""Manifests: the immutable, complete description of one checkpoint of the execution directory.

A manifest lists every file with its size, mode, mtime and sha256. Files larger than the chunk
size are stored as a list of content-addressed chunks; smaller ones as one object named by the
file's own sha256. Everything here is pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from airflow_grid_resume.agent.errors import ManifestError, UnsafePathError
from airflow_grid_resume.agent.paths import check_relative_path

FORMAT = "grid-resume-manifest/1"
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_NAME = re.compile(r"^(\d{6})-(\d{6})\.json$")


@dataclass(frozen=True)
class FileEntry:
    """A regular file. ``chunks`` is empty when the file is stored as a single object."""

    path: str
    size: int
    mode: int
    mtime_ns: int
    sha256: str
    chunks: tuple[str, ...] = ()

    def object_hashes(self) -> tuple[str, ...]:
        """The content addresses holding this file's bytes, in order."""
        return self.chunks if self.chunks else (self.sha256,)


@dataclass(frozen=True)
class LinkEntry:
    """A symbolic link, stored as its target text and never followed."""

    path: str
    target: str


@dataclass(frozen=True)
class DirEntry:
    """A directory, recorded so empty directories and directory modes survive."""

    path: str
    mode: int


@dataclass(frozen=True)
class Manifest:
    """One committed checkpoint: ``session`` and ``seq`` order manifests within a run."""

    session: int
    seq: int
    created_at: str
    reason: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    files: tuple[FileEntry, ...] = ()
    links: tuple[LinkEntry, ...] = ()
    dirs: tuple[DirEntry, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return manifest_name(self.session, self.seq)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def object_hashes(self) -> set[str]:
        return {h for f in self.files for h in f.object_hashes()}

    def same_content(self, other: Manifest | None) -> bool:
        """True when both describe the same tree (ignores session, seq, time and reason)."""
        return other is not None and (self.files, self.links, self.dirs) == (other.files, other.links, other.dirs)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "session": self.session,
            "seq": self.seq,
            "created_at": self.created_at,
            "reason": self.reason,
            "chunk_size": self.chunk_size,
            "totals": {"files": len(self.files), "bytes": self.total_bytes},
            "files": [_file_doc(f) for f in self.files],
            "links": [{"path": s.path, "target": s.target} for s in self.links],
            "dirs": [{"path": d.path, "mode": d.mode} for d in self.dirs],
            **({"extra": self.extra} if self.extra else {}),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _file_doc(f: FileEntry) -> dict:
    doc = {"path": f.path, "size": f.size, "mode": f.mode, "mtime_ns": f.mtime_ns, "sha256": f.sha256}
    if f.chunks:
        doc["chunks"] = list(f.chunks)
    return doc


def manifest_name(session: int, seq: int) -> str:
    """File name of a manifest; zero padding makes name order equal (session, seq) order."""
    return f"{session:06d}-{seq:06d}.json"


def parse_manifest_name(name: str) -> tuple[int, int] | None:
    """``(session, seq)`` for a manifest file name, or None for anything else."""
    m = _MANIFEST_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ManifestError(f"{what} is not a lowercase hex sha256: {value!r}")
    return value


def _int(doc: dict, key: str, what: str, *, minimum: int = 0) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ManifestError(f"{what}: field {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _path(doc: dict, what: str) -> str:
    try:
        return check_relative_path(doc.get("path"))
    except UnsafePathError as exc:
        raise ManifestError(f"{what}: unsafe path rejected: {exc}") from exc


def parse_manifest(data: bytes, *, name: str = "manifest") -> Manifest:
    """Parse and fully validate a manifest read back from the ledger (untrusted input)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"{name} is not a {FORMAT} document")
    chunk_size = _int(doc, "chunk_size", name, minimum=1)
    files: list[FileEntry] = []
    seen: set[str] = set()
    for raw in _list(doc, "files", name):
        path = _path(raw, name)
        what = f"{name} file {path!r}"
        size = _int(raw, "size", what)
        sha = check_sha256(raw.get("sha256"), f"{what} sha256")
        chunks = tuple(check_sha256(c, f"{what} chunk") for c in raw.get("chunks") or ())
        expected_chunks = -(-size // chunk_size) if size > chunk_size else 0
        if len(chunks) != expected_chunks:
            raise ManifestError(f"{what}: {len(chunks)} chunks for {size} bytes, expected {expected_chunks}")
        files.append(FileEntry(path, size, _int(raw, "mode", what) & 0o7777, _int(raw, "mtime_ns", what), sha, chunks))
        seen.add(path)
    links = []
    for raw in _list(doc, "links", name):
        path = _path(raw, name)
        target = raw.get("target")
        if not isinstance(target, str) or not target or "\0" in target:
            raise ManifestError(f"{name} link {path!r} has an invalid target {target!r}")
        links.append(LinkEntry(path, target))
    dirs = [DirEntry(_path(raw, name), _int(raw, "mode", name) & 0o7777) for raw in _list(doc, "dirs", name)]
    all_paths = [f.path for f in files] + [s.path for s in links] + [d.path for d in dirs]
    if len(set(all_paths)) != len(all_paths):
        raise ManifestError(f"{name} lists the same path twice")
    return Manifest(
        session=_int(doc, "session", name),
        seq=_int(doc, "seq", name),
        created_at=str(doc.get("created_at", "")),
        reason=str(doc.get("reason", "")),
        chunk_size=chunk_size,
        files=tuple(files),
        links=tuple(links),
        dirs=tuple(dirs),
        extra=doc.get("extra") if isinstance(doc.get("extra"), dict) else {},
    )


def _list(doc: dict, key: str, name: str) -> Iterator[dict]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ManifestError(f"{name}: field {key!r} must be a list of objects")
    return iter(value)


def chunk_length(size: int, chunk_size: int, index: int) -> int:
    """Length of chunk ``index`` of a file of ``size`` bytes."""
    return max(0, min(chunk_size, size - index * chunk_size))


def sort_entries(entries: Iterable[FileEntry]) -> tuple[FileEntry, ...]:
    return tuple(sorted(entries, key=lambda e: e.path))
