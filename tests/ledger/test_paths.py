"""ledger/paths.py: every name Linux holds is storable, hostile paths are refused. Pure: no server."""

from __future__ import annotations

import hashlib
import os

import pytest

from airflow_grid_resume.ledger.errors import UnsafePathError
from airflow_grid_resume.ledger.manifest import (
    FileEntry,
    LinkEntry,
    Manifest,
    parse_manifest,
)
from airflow_grid_resume.ledger.paths import check_relative_path, safe_target, storable_path

SHA = hashlib.sha256(b"x").hexdigest()


# Every name Linux holds: any byte but "/" and NUL, up to 255 bytes, paths up to PATH_MAX.
ODD_NAMES = [
    "1:30.log",
    "C:x",
    "a\\b.txt",
    "..\\x",
    "tab\there",
    "cr\rhere",
    "nl\nand\x7fdel",
    os.fsdecode(b"latin1-\xe9t\xe9.bin"),  # not UTF-8
    "\u00e9" * 127 + "x",  # 255 bytes of UTF-8
    "n" * 255,
    "/".join(["d" * 200] * 20),  # 4019 bytes deep
    ".grid-resume-tmp",  # the marker alone is an ordinary name
]


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/abs",
        "a/../../b",
        "a//b",
        "./a",
        "",
        "a\x00b",
        "a/.",
        "n" * 256,  # over NAME_MAX
        "d/" * 2048 + "f",  # over PATH_MAX
        "\udcc3\udca9",  # valid UTF-8 (e-acute) spelled as escaped bytes: two spellings of one name
        "\ud800x",  # a surrogate no byte decodes to
        "ckpt/.grid-resume-tmp-0123abcd",  # restore's temporary name
        "w.bin.grid-resume-tmp-0123abcd",  # an older agent's temporary name
    ],
)
def test_hostile_paths_rejected(path: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relative_path(path)


@pytest.mark.parametrize("path", ["a", "a/b.txt", "ckpt/epoch=3.ckpt", "..hidden", "a..b/c", *ODD_NAMES])
def test_ordinary_paths_accepted(path: str) -> None:
    assert check_relative_path(path) == path


def test_odd_names_round_trip_through_a_manifest_bit_exact() -> None:
    """The manifest is ASCII JSON; each name reads back as the same bytes, and a link target too."""
    files = tuple(FileEntry(p, 1, 0o644, 0, SHA) for p in sorted(ODD_NAMES))
    target = os.fsdecode(b"../\xff\tweird target")
    manifest = Manifest(1, 1, "t", "final", files=files, links=(LinkEntry("lnk", target),))
    data = manifest.to_json()
    data.decode("ascii")
    back = parse_manifest(data)
    assert [os.fsencode(f.path) for f in back.files] == [os.fsencode(p) for p in sorted(ODD_NAMES)]
    assert back.links[0].target == target and back.files == manifest.files


def test_a_path_too_deep_for_the_workdir_is_not_storable(tmp_path) -> None:
    root = str(tmp_path)
    deep = "/".join(["d" * 200] * 20)
    assert storable_path("/w", deep) is None
    why = storable_path(root + "/" + "x" * 100, deep)
    assert why is not None and "PATH_MAX" in why and deep[:50] in why
    assert "NUL" in (storable_path(root, "a\x00") or "")


def test_safe_target_refuses_symlinked_parent(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="not a directory"):
        safe_target(str(root), "link/passwd")
    assert safe_target(str(root), "dir/file") == str(root / "dir" / "file")
