"""agent/scan.py: the path filter and the hash cache. Pure, on local files: no server."""

from __future__ import annotations

import hashlib
import os
import time
from types import SimpleNamespace

from airflow_grid_resume.agent.scan import Digest, HashCache, PathFilter

SHA = hashlib.sha256(b"x").hexdigest()


def _stat(**kw):
    base = dict(st_size=1, st_mtime_ns=0, st_ctime_ns=0, st_ino=1, st_dev=1)
    base.update(kw)
    return SimpleNamespace(**base)


# -- filters and the hash cache ---------------------------------------------------------------
def test_path_filter_semantics() -> None:
    f = PathFilter(exclude=["__pycache__", "*.tmp", "data/raw"])
    assert f.excluded("a/__pycache__/x.pyc")
    assert f.excluded("deep/x.tmp")
    assert f.excluded("data/raw/part-1")
    assert not f.excluded("data/rawish")
    assert f.excluded("x.grid-resume-tmp-1234abcd") and f.excluded("d/.grid-resume-tmp-1234abcd/x")
    assert not f.excluded("notes.grid-resume-tmp") and not f.excluded("a.grid-resume-tmp-x")  # user names
    inc = PathFilter(include=["ckpt/*", "*.json"])
    assert inc.included_file("ckpt/a.pt") and inc.included_file("x/y.json") and not inc.included_file("big.bin")


def test_hash_cache_trusts_only_settled_files() -> None:
    cache = HashCache()
    now = time.time_ns()
    digest = Digest(SHA, ())
    old = _stat(st_mtime_ns=now - 10**10, st_ctime_ns=now - 10**10)
    cache.store("a", old, digest, hashed_at_ns=now)
    assert cache.lookup("a", old) == digest
    assert cache.lookup("a", _stat(st_mtime_ns=old.st_mtime_ns, st_ctime_ns=now)) is None  # same size+mtime, new ctime
    fresh = _stat(st_mtime_ns=now - 10**6, st_ctime_ns=now - 10**6)
    cache.store("b", fresh, digest, hashed_at_ns=now)  # racily clean: must be hashed again
    assert cache.lookup("b", fresh) is None


def test_same_size_same_mtime_change_is_seen(tmp_path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"A" * 100)
    os.utime(path, ns=(10**18, 10**18))
    st1 = os.stat(path)
    cache = HashCache()
    cache.store("w.bin", st1, Digest(SHA, ()))
    assert cache.lookup("w.bin", os.stat(path)) == Digest(SHA, ())
    time.sleep(0.05)  # past the kernel's coarse timestamp tick; the racy window covers closer writes
    path.write_bytes(b"B" * 100)
    os.utime(path, ns=(10**18, 10**18))
    st2 = os.stat(path)
    assert (st2.st_size, st2.st_mtime_ns) == (st1.st_size, st1.st_mtime_ns)
    assert cache.lookup("w.bin", st2) is None
