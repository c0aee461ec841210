"""The source tree of the v1 ledger fixture in tests/fixtures/ledger-v1 (deterministic bytes and times).

The fixture was written by the agent's v1 sync (commit 01d88dc, manifest format
``grid-resume-manifest/1``) with ``chunk_size=64 KiB`` from the two versions below; the test of a v1
run restores it with today's agent and compares the result with ``make_v1_tree(version=2)``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

V1_CHUNK = 64 * 1024
MTIME_NS = 1_700_000_000_123_456_789


def _bytes(seed: str, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def make_v1_tree(root: Path, version: int) -> None:
    """Version 1, then version 2 (ckpt changed, a file added): the fixture's two manifests."""
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "empty" / "nested").mkdir(parents=True, exist_ok=True)
    files = {
        "code/train.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "secret.key": (b"k", 0o600),
        "big.bin": (_bytes("big", 3 * V1_CHUNK + 123), 0o644),
        "dup1": (b"same bytes", 0o644),
        "dup2": (b"same bytes", 0o644),
        "ckpt": (f"version {version}".encode(), 0o644),
    }
    if version == 2:
        files["only-in-two"] = (b"y", 0o644)
    for rel, (data, mode) in files.items():
        path = root / rel
        path.write_bytes(data)
        path.chmod(mode)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    if not (root / "latest").is_symlink():
        (root / "latest").symlink_to("big.bin")
