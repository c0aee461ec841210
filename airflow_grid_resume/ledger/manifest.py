"""Manifests: the immutable, complete description of one checkpoint of the execution directory.

A manifest lists every file with its size, mode, mtime and content hash, and where its bytes are:

- a small file (under ``SMALL_FILE``) is a range of a content-addressed *pack* (``pack``, ``offset``);
- a file larger than the chunk size is a list of content-addressed chunk objects (``chunks``);
- anything else (and every small file of a format-1 manifest) is one object named by its sha256;
- an empty file has no bytes anywhere.

Format 2 (``grid-resume-manifest/2``) is written; format 1 (no packs, and a chunked file's
``sha256`` is the hash of its whole content) is still read. A newer format is refused, never
guessed at. Paths and link targets are JSON strings naming the file's bytes as
``ledger/paths.py`` says (UTF-8, other bytes as ``\\udcXX`` escapes): any name Linux holds. Everything
here is pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from airflow_grid_resume.ledger.errors import ManifestError, UnsafePathError, UnsupportedFormatError
from airflow_grid_resume.ledger.paths import PATH_MAX, check_relative_path, path_bytes

FORMAT_PREFIX = "grid-resume-manifest/"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_PREFIX}{FORMAT_VERSION}"
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
# Files smaller than this go into packs: below about 1 MiB a request's latency costs more than its
# bytes on S3 (see docs/ledger.md, "Packs").
SMALL_FILE = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_NAME = re.compile(r"^(\d{6})-(\d{6})\.json$")


def chunk_root(chunks: Iterable[str]) -> str:
    """The content hash of a chunked file in format 2: sha256 over its chunks' binary digests.

    It identifies the bytes as well as a whole-file hash does (given the chunk size), and costs no
    second pass over the file on sync nor on restore."""
    return hashlib.sha256(b"".join(bytes.fromhex(c) for c in chunks)).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """A regular file and where its bytes are stored (see the module docstring)."""

    path: str
    size: int
    mode: int
    mtime_ns: int
    sha256: str
    chunks: tuple[str, ...] = ()
    pack: str = ""
    offset: int = 0

    def object_hashes(self) -> tuple[str, ...]:
        """The content-addressed objects (not packs) holding this file's bytes, in order."""
        if self.chunks:
            return self.chunks
        return () if self.pack or self.size == 0 else (self.sha256,)

    @property
    def content_id(self) -> str:
        """The format-2 content hash: what a sync that reads this file now records."""
        return chunk_root(self.chunks) if self.chunks else self.sha256


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
    version: int = FORMAT_VERSION

    @property
    def name(self) -> str:
        return manifest_name(self.session, self.seq)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def object_hashes(self) -> set[str]:
        return {h for f in self.files for h in f.object_hashes()}

    def pack_hashes(self) -> set[str]:
        return {f.pack for f in self.files if f.pack}

    def same_content(self, other: Manifest | None) -> bool:
        """True when both describe the same tree stored the same way (ignores session, seq, time, reason)."""
        return (
            other is not None
            and other.version == self.version
            and (self.files, self.links, self.dirs) == (other.files, other.links, other.dirs)
        )

    def to_json(self) -> bytes:
        if self.version != FORMAT_VERSION:
            raise ValueError(f"only {FORMAT} manifests are written")
        packs = sorted(self.pack_hashes())
        index = {p: i for i, p in enumerate(packs)}
        doc = {
            "format": FORMAT,
            "session": self.session,
            "seq": self.seq,
            "created_at": self.created_at,
            "reason": self.reason,
            "chunk_size": self.chunk_size,
            "totals": {"files": len(self.files), "bytes": self.total_bytes, "packs": len(packs)},
            "packs": packs,
            "files": [_file_doc(f, index) for f in self.files],
            "links": [{"path": s.path, "target": s.target} for s in self.links],
            "dirs": [{"path": d.path, "mode": d.mode} for d in self.dirs],
            **({"extra": self.extra} if self.extra else {}),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _file_doc(f: FileEntry, packs: dict[str, int]) -> dict:
    doc: dict = {"path": f.path, "size": f.size, "mode": f.mode, "mtime_ns": f.mtime_ns, "sha256": f.sha256}
    if f.chunks:
        doc["chunks"] = list(f.chunks)
    if f.pack:
        doc["pack"], doc["offset"] = packs[f.pack], f.offset
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
        return check_relative_path(str(doc.get("path", "")))
    except UnsafePathError as exc:
        raise ManifestError(f"{what}: unsafe path rejected: {exc}") from exc


def format_version(doc: dict, name: str, prefix: str, known: int) -> int:
    """The version of a ledger document's ``format`` field; a newer one than ``known`` is refused.

    Refusing (instead of reading what looks familiar) is what keeps an old agent from restoring,
    and then overwriting, a run that a newer agent wrote in a layout it does not understand."""
    value = doc.get("format")
    if not isinstance(value, str) or not value.startswith(prefix) or not value[len(prefix) :].isdigit():
        raise ManifestError(f"{name} is not a {prefix}N document (format {value!r})")
    version = int(value[len(prefix) :])
    if version > known:
        raise UnsupportedFormatError(
            f"{name} has format {value}, newer than this agent reads (up to {prefix}{known}): upgrade "
            "airflow-grid-resume (the agent zipapp comes from the provider package) to resume this run. "
            "Nothing in the run or the workdir was changed."
        )
    if version < 1:
        raise ManifestError(f"{name} has an invalid format {value!r}")
    return version


def parse_manifest(data: bytes, *, name: str = "manifest") -> Manifest:
    """Parse and fully validate a manifest read back from the ledger (untrusted input)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{name} is not a {FORMAT_PREFIX}N document")
    version = format_version(doc, name, FORMAT_PREFIX, FORMAT_VERSION)
    chunk_size = _int(doc, "chunk_size", name, minimum=1)
    packs = doc.get("packs", []) if version >= 2 else []
    if not isinstance(packs, list):
        raise ManifestError(f"{name}: field 'packs' must be a list")
    packs = [check_sha256(p, f"{name} pack") for p in packs]
    files: list[FileEntry] = []
    for raw in _list(doc, "files", name):
        path = _path(raw, name)
        what = f"{name} file {path!r}"
        size = _int(raw, "size", what)
        sha = check_sha256(raw.get("sha256"), f"{what} sha256")
        chunks = tuple(check_sha256(c, f"{what} chunk") for c in raw.get("chunks") or ())
        expected_chunks = -(-size // chunk_size) if size > chunk_size else 0
        if len(chunks) != expected_chunks:
            raise ManifestError(f"{what}: {len(chunks)} chunks for {size} bytes, expected {expected_chunks}")
        if version >= 2 and chunks and chunk_root(chunks) != sha:
            raise ManifestError(f"{what}: sha256 is not the root of its chunks")
        pack, offset = "", 0
        if "pack" in raw:
            index = raw.get("pack")
            if version < 2 or chunks or not isinstance(index, int) or isinstance(index, bool):
                raise ManifestError(f"{what}: invalid pack reference {index!r}")
            if not 0 <= index < len(packs):
                raise ManifestError(f"{what}: pack index {index} out of range (the manifest lists {len(packs)})")
            pack, offset = packs[index], _int(raw, "offset", what)
        mode = _int(raw, "mode", what) & 0o7777
        files.append(FileEntry(path, size, mode, _int(raw, "mtime_ns", what), sha, chunks, pack, offset))
    links = []
    for raw in _list(doc, "links", name):
        path = _path(raw, name)
        target = raw.get("target")
        if not isinstance(target, str) or not target or "\0" in target or not _link_target_ok(target):
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
        extra=doc["extra"] if isinstance(doc.get("extra"), dict) else {},
        version=version,
    )


def _link_target_ok(target: str) -> bool:
    """A symlink's target is any bytes but NUL, shorter than PATH_MAX, stored as paths are."""
    try:
        return len(path_bytes(target)) < PATH_MAX
    except UnsafePathError:
        return False


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


def as_current(entry: FileEntry) -> FileEntry:
    """A format-1 entry as a format-2 sync records it: same stored bytes, format-2 content hash."""
    return entry if not entry.chunks else replace(entry, sha256=entry.content_id)
