"""ledger/manifest.py: manifests round-trip, and malformed or hostile ones are refused. Pure: no server."""

from __future__ import annotations

import hashlib
import json

import pytest

from airflow_grid_resume.ledger.errors import ManifestError, UnsupportedFormatError
from airflow_grid_resume.ledger.manifest import (
    FORMAT,
    FileEntry,
    Manifest,
    as_current,
    chunk_root,
    parse_manifest,
    parse_manifest_name,
)

SHA = hashlib.sha256(b"x").hexdigest()


PACK = hashlib.sha256(b"pack").hexdigest()


def _manifest_doc(files: list[dict], **extra) -> bytes:
    doc = {"format": FORMAT, "session": 1, "seq": 1, "chunk_size": 4, "files": files, "links": [], "dirs": []}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_manifest_round_trip() -> None:
    m = Manifest(
        session=2,
        seq=3,
        created_at="t",
        reason="final",
        chunk_size=4,
        files=(
            FileEntry("a", 9, 0o644, 1, chunk_root((SHA, SHA, SHA)), (SHA, SHA, SHA)),
            FileEntry("b/c", 1, 0o755, 2, SHA, pack=PACK, offset=7),
            FileEntry("d", 2, 0o644, 2, SHA),
        ),
    )
    assert parse_manifest(m.to_json()) == m
    assert json.loads(m.to_json())["packs"] == [PACK]
    assert m.name == "000002-000003.json" and parse_manifest_name(m.name) == (2, 3)


def test_newer_manifest_format_is_refused_with_what_to_do() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"grid-resume-manifest/3, newer than this agent.*upgrade"):
        parse_manifest(_manifest_doc([], format="grid-resume-manifest/3"))
    with pytest.raises(ManifestError, match="not a grid-resume-manifest/N"):
        parse_manifest(_manifest_doc([], format="something-else/1"))


def test_v2_manifest_checks_pack_references_and_chunk_roots() -> None:
    entry = {"path": "a", "size": 1, "mode": 420, "mtime_ns": 0, "sha256": SHA, "pack": 1, "offset": 0}
    with pytest.raises(ManifestError, match="pack index 1 out of range"):
        parse_manifest(_manifest_doc([entry], packs=[PACK]))
    chunked = {"path": "a", "size": 9, "mode": 420, "mtime_ns": 0, "sha256": SHA, "chunks": [SHA] * 3}
    with pytest.raises(ManifestError, match="root of its chunks"):
        parse_manifest(_manifest_doc([chunked]))
    v1 = parse_manifest(_manifest_doc([chunked], format="grid-resume-manifest/1"))  # v1: the whole-file hash
    assert v1.version == 1 and as_current(v1.files[0]).sha256 == chunk_root([SHA] * 3)


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../../x", "n" * 256])
def test_manifest_with_hostile_path_rejected(bad: str) -> None:
    data = _manifest_doc([{"path": bad, "size": 1, "mode": 420, "mtime_ns": 0, "sha256": SHA}])
    with pytest.raises(ManifestError, match="unsafe path"):
        parse_manifest(data)


def test_manifest_wrong_chunk_count_and_bad_hash_rejected() -> None:
    with pytest.raises(ManifestError, match="chunks"):
        parse_manifest(_manifest_doc([{"path": "a", "size": 9, "mode": 420, "mtime_ns": 0, "sha256": SHA}]))
    with pytest.raises(ManifestError, match="sha256"):
        parse_manifest(_manifest_doc([{"path": "a", "size": 1, "mode": 420, "mtime_ns": 0, "sha256": "zz"}]))
    with pytest.raises(ManifestError, match="JSON"):
        parse_manifest(b"{nope")
