"""Sync and restore against moto's server over HTTP: integrity, incrementality, fallbacks, safety."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from airflow_grid_resume.agent import scan
from airflow_grid_resume.agent.lease import acquire_lease
from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.emulator.faultproxy import FaultProxy, FaultRule
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.errors import LeaseHeldError, NoRestorableCheckpointError, UnstorablePathError
from airflow_grid_resume.ledger.manifest import FileEntry, Manifest
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger

CHUNK = 64 * 1024


def make_tree(root: Path) -> None:
    (root / "code").mkdir(parents=True)
    (root / "code" / "train.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "code" / "train.sh").chmod(0o755)
    (root / "secret.key").write_text("k")
    (root / "secret.key").chmod(0o600)
    (root / "empty" / "nested").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(5 * CHUNK + 123))
    (root / "dup1").write_bytes(b"same bytes")
    (root / "dup2").write_bytes(b"same bytes")
    (root / "latest").symlink_to("big.bin")


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything restore must reproduce: bytes, mode, mtime, link targets, directories."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = (
                    "file",
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                )
    return out


def syncer(ledger: RunLedger, root: Path, session: int = 1, **kw) -> Syncer:
    return Syncer(ledger, str(root), session=session, chunk_size=CHUNK, parallelism=8, **kw)


def test_round_trip_restores_bytes_modes_links_and_empty_dirs(ledger: RunLedger, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    result = syncer(ledger, src).sync("final")
    assert result.committed
    assert result.objects_uploaded == 6  # the chunks of big.bin
    assert result.packs_uploaded == 1  # script, key, and dup1/dup2 once: one pack
    manifest = result.manifest
    assert manifest is not None
    packed = {f.path: f for f in manifest.files if f.pack}
    assert set(packed) == {"code/train.sh", "secret.key", "dup1", "dup2"}
    assert packed["dup1"].offset == packed["dup2"].offset  # identical bytes stored once
    restored = Restorer(ledger, str(dst)).restore()
    assert restored.manifest is not None and restored.manifest.name == "000001-000001.json"
    assert snapshot(dst) == snapshot(src)
    assert not [p for p in dst.rglob("*") if "grid-resume-tmp" in p.name]


def test_resync_uploads_nothing_and_new_session_dedups(ledger: RunLedger, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(scan, "RACY_WINDOW_NS", 0)
    src = tmp_path / "src"
    make_tree(src)
    time.sleep(0.05)
    s = syncer(ledger, src)
    first = s.sync("periodic")
    again = s.sync("periodic")
    assert (again.committed, again.files_hashed, again.objects_uploaded) == (False, 0, 0)
    # Next session on a fresh instance: restore, then sync the same tree -> nothing uploaded.
    dst = tmp_path / "dst"
    cache = scan.HashCache()
    restored = Restorer(ledger, str(dst), cache=cache).restore()
    s2 = syncer(ledger, dst, session=2, cache=cache, last_manifest=restored.manifest)
    (dst / "new.txt").write_text("new")
    second = s2.sync("final")
    assert second.committed and second.files_hashed == 1
    assert (second.packs_uploaded, second.objects_uploaded, second.bytes_uploaded) == (1, 0, 3)  # one tiny pack
    assert first.manifest is not None


def test_same_size_same_mtime_change_is_synced(ledger: RunLedger, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(scan, "RACY_WINDOW_NS", 10_000_000)
    src = tmp_path / "src"
    src.mkdir()
    weights = src / "weights.bin"
    weights.write_bytes(b"A" * 4096)
    os.utime(weights, ns=(1_700_000_000_000_000_000,) * 2)
    time.sleep(0.05)
    s = syncer(ledger, src)
    s.sync("periodic")
    assert s.sync("periodic").files_hashed == 0  # the cache is really used
    time.sleep(0.05)
    weights.write_bytes(b"B" * 4096)
    os.utime(weights, ns=(1_700_000_000_000_000_000,) * 2)
    result = s.sync("periodic")
    assert result.committed and result.files_hashed == 1
    dst = tmp_path / "dst"
    Restorer(ledger, str(dst)).restore()
    assert (dst / "weights.bin").read_bytes() == b"B" * 4096


def _key_of(ledger: RunLedger, path: str) -> str:
    """The pack or object holding ``path`` in the newest manifest."""
    newest = ledger.read_manifest(ledger.list_manifests()[0])
    return ledger.blob_keys(next(f for f in newest.files if f.path == path))[0]


def _two_versions(ledger: RunLedger, tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ckpt").write_text("version one")
    (src / "only-in-one").write_text("x")
    s = syncer(ledger, src)
    s.sync("periodic")
    (src / "ckpt").write_text("version two!")
    (src / "only-in-two").write_text("y")
    s.sync("final")
    return src, _key_of(ledger, "ckpt")


def test_corrupt_pack_falls_back_to_older_manifest(ledger: RunLedger, tmp_path: Path, caplog) -> None:
    _, pack_two = _two_versions(ledger, tmp_path)
    assert "/packs/" in pack_two
    client = boto3.client("s3")
    good = client.get_object(Bucket=ledger.location.bucket, Key=pack_two)["Body"].read()
    rotten = bytes(b ^ 0x20 for b in good)  # same length: only the sha256 of each file can tell
    client.put_object(Bucket=ledger.location.bucket, Key=pack_two, Body=rotten)
    dst = tmp_path / "dst"
    result = Restorer(ledger, str(dst)).restore()
    assert result.manifest is not None and result.manifest.name == "000001-000001.json"
    assert (dst / "ckpt").read_text() == "version one"
    assert not (dst / "only-in-two").exists()  # what the abandoned manifest wrote is removed
    assert result.fallbacks and result.fallbacks[0][0] == "000001-000002.json"
    assert "corrupt" in result.fallbacks[0][1]
    assert "restored the older manifest 000001-000001.json" in caplog.text


def test_missing_object_falls_back(ledger: RunLedger, tmp_path: Path) -> None:
    _, pack_two = _two_versions(ledger, tmp_path)
    boto3.client("s3").delete_object(Bucket=ledger.location.bucket, Key=pack_two)
    result = Restorer(ledger, str(tmp_path / "dst")).restore()
    assert result.manifest is not None and result.manifest.seq == 1
    assert "missing" in result.fallbacks[0][1]


def test_no_verifiable_manifest_refuses_to_start_over(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    syncer(ledger, src).sync("final")
    boto3.client("s3").put_object(Bucket=ledger.location.bucket, Key=_key_of(ledger, "a"), Body=b"b")
    with pytest.raises(NoRestorableCheckpointError, match="Refusing to start over"):
        Restorer(ledger, str(tmp_path / "dst")).restore()


@pytest.mark.parametrize("hostile", ["../escaped", "/tmp/abs-escaped", "ok/../../escaped", "ok/./../escaped"])
def test_hostile_manifest_paths_never_escape(ledger: RunLedger, tmp_path: Path, hostile: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good").write_text("good")
    syncer(ledger, src).sync("final")
    sha = hashlib.sha256(b"evil").hexdigest()
    ledger.put_blob(sha, b"evil")
    evil = Manifest(1, 9, "t", "final", files=(FileEntry("good", 4, 0o644, 0, hashlib.sha256(b"good").hexdigest()),))
    doc = (
        evil.to_json()
        .replace(b'"path":"good"', b'"path":' + _json_str(hostile))
        .replace(hashlib.sha256(b"good").hexdigest().encode(), sha.encode())
    )
    ledger.put(ledger.key("manifests", "000001-000009.json"), doc)
    root = tmp_path / "deep" / "dst"
    result = Restorer(ledger, str(root)).restore()
    assert result.manifest is not None and result.manifest.seq == 1  # the hostile one is rejected
    assert "unsafe path" in result.fallbacks[0][1] and hostile.split("/")[0][:2] in result.fallbacks[0][1]
    assert (root / "good").read_text() == "good"
    assert not list(tmp_path.rglob("*escaped*")) and not Path("/tmp/abs-escaped").exists()


def _json_str(s: str) -> bytes:
    import json

    return json.dumps(s).encode()


def test_symlinked_directory_in_workdir_is_not_written_through(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("data")
    syncer(ledger, src).sync("final")
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "sub").symlink_to(outside)  # a local symlink where the manifest has a directory
    Restorer(ledger, str(dst)).restore()
    assert (dst / "sub" / "f").read_text() == "data" and not (dst / "sub").is_symlink()
    assert list(outside.iterdir()) == []


def test_throttling_and_5xx_are_retried(moto, bucket: str, tmp_path: Path) -> None:
    with FaultProxy(moto.endpoint_url, seed=7) as proxy:
        proxy.add_rule(FaultRule(status=503, rate=0.3, limit=10))
        proxy.add_rule(FaultRule(status=500, rate=0.1, limit=4))
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint_url
        from airflow_grid_resume.ledger.uri import parse_s3_uri

        flaky = RunLedger(make_s3_client(parallelism=8), parse_s3_uri(f"s3://{bucket}/flaky"))
        src = tmp_path / "src"
        make_tree(src)
        for i in range(40):
            (src / f"small-{i}").write_bytes(os.urandom(100))
        assert syncer(flaky, src).sync("final").committed
        dst = tmp_path / "dst"
        Restorer(flaky, str(dst), parallelism=8).restore()
        assert proxy.injected == 14
    os.environ["AWS_ENDPOINT_URL"] = moto.endpoint_url
    assert snapshot(dst) == snapshot(src)


def test_two_agents_one_lease(ledger: RunLedger) -> None:
    first = acquire_lease(ledger, records.Lease(agent_id="a", session=1, host="h1"), ttl=60)
    with pytest.raises(LeaseHeldError, match="another agent is already running") as err:
        acquire_lease(ledger, records.Lease(agent_id="b"), ttl=60)
    assert "session 1, host h1" in str(err.value)
    first.release()
    second = acquire_lease(ledger, records.Lease(agent_id="b"), ttl=0.5)
    time.sleep(0.6)
    third = acquire_lease(ledger, records.Lease(agent_id="c"), ttl=60)  # expired: taken over
    from airflow_grid_resume.ledger.store import ConditionalWriteLost

    with pytest.raises(ConditionalWriteLost):
        second.renew()
    third.renew()


def test_log_reads_from_any_offset(ledger: RunLedger) -> None:
    ledger.append_log(1, 0, b"hello ")
    ledger.append_log(1, 6, b"world\n")
    ledger.append_log(1, 12, b"again\n")
    assert ledger.read_log(1, 0) == (b"hello world\nagain\n", 18)
    assert ledger.read_log(1, 8) == (b"rld\nagain\n", 18)
    assert ledger.read_log(1, 18) == (b"", 18)
    assert ledger.read_log(2, 0) == (b"", 0)


def test_a_renewal_whose_answers_were_all_lost_keeps_the_lease(moto, run_uri: str, monkeypatch) -> None:
    """Issue 9's invariant 5 for the case botocore cannot hide: the renewal lands in S3 but every attempt's
    answer is lost (a network cut longer than the retries), so ``renew`` raises and the agent keeps its old
    ETag. The next renewal meets 412 on it and finds the bytes of that landed renewal (ours), not another
    agent's: the lease is still ours, and the session must not stop as if it were stolen."""
    from airflow_grid_resume.ledger.store import ConditionalWriteLost
    from airflow_grid_resume.ledger.uri import parse_s3_uri

    with FaultProxy(moto.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        ledger = RunLedger(make_s3_client(max_attempts=2), parse_s3_uri(run_uri))
        lease = acquire_lease(ledger, records.Lease(agent_id="a", instance_id="i-1"), ttl=60)
        # max_attempts=2 is 3 attempts (botocore counts retries): all 3 answers are lost.
        cut = proxy.add_rule(FaultRule(drop=True, rate=1.0, method="PUT", path_contains="lease.json", limit=3))
        with pytest.raises(BotoCoreError) as lost:  # whatever botocore raises once its retries run out
            lease.renew(session=1)
        assert not isinstance(lost.value, ConditionalWriteLost) and cut.hits == 3
        stored = ledger.read_record(records.Lease)
        assert stored.session == 1 and stored.agent_id == "a"  # the first attempt landed: nobody else wrote
        lease.renew(session=1)  # today: ConditionalWriteLost, and the supervisor sends lease_lost
        assert ledger.read_record(records.Lease).renewed_at == lease.record.renewed_at


def test_restore_sets_aside_whatever_differs_and_never_deletes(ledger: RunLedger, tmp_path: Path) -> None:
    """A local file where the checkpoint has a directory, a local directory where it has a file, a
    link pointing elsewhere: each is moved aside whole, not unlinked or rmtree'd; identical files
    and paths the checkpoint does not have stay as they are."""
    src = tmp_path / "src"
    make_tree(src)
    syncer(ledger, src).sync("final")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "code").write_text("a local file named like the checkpoint's directory")
    (dst / "big.bin").mkdir()
    (dst / "big.bin" / "inner.txt").write_text("work inside a local directory")
    (dst / "latest").symlink_to("somewhere-else")
    (dst / "secret.key").write_text("k")  # identical bytes: untouched (only its mode is put right)
    inode = (dst / "secret.key").stat().st_ino
    (dst / "mine.txt").write_text("not in the checkpoint")
    result = Restorer(ledger, str(dst), session=7).restore()
    kept = dst / ".grid-resume-kept" / "session-7"
    assert sorted(result.set_aside) == [(p, f".grid-resume-kept/session-7/{p}") for p in ("big.bin", "code", "latest")]
    assert (kept / "code").read_text() == "a local file named like the checkpoint's directory"
    assert (kept / "big.bin" / "inner.txt").read_text() == "work inside a local directory"
    assert os.readlink(kept / "latest") == "somewhere-else"
    assert (dst / "secret.key").stat().st_ino == inode
    assert (dst / "mine.txt").read_text() == "not in the checkpoint"
    restored = {k: v for k, v in snapshot(dst).items() if not k.startswith(".grid-resume-kept") and k != "mine.txt"}
    assert restored == snapshot(src)
    assert result.set_aside_record() == {
        "count": 3,
        "dirs": [".grid-resume-kept/session-7"],
        "paths": ["big.bin", "code", "latest"],
    }
    # Restoring again into the same directory (another run, the same session number) never mixes kept copies.
    (dst / "code" / "train.sh").write_text("edited again")
    again = Restorer(ledger, str(dst), session=7).restore()
    assert again.set_aside == [("code/train.sh", ".grid-resume-kept/session-7.2/code/train.sh")]
    assert (dst / ".grid-resume-kept" / "session-7.2" / "code" / "train.sh").read_text() == "edited again"
    assert (kept / "code").read_text() == "a local file named like the checkpoint's directory"


# -- every name Linux holds, sparse files, fallbacks that say so ----------------------------------
DEEP_LEVELS = 17  # 17 components of 200 bytes: about 3.4 KiB of path under the workdir


def make_odd_tree(root: Path) -> None:
    """Names an older agent synced but could not restore (or whose restore crashed): every byte but
    ``/`` and NUL, non-UTF-8 bytes, 255-byte names, a deep path, a link to a non-UTF-8 target."""
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    names = [
        b"1:30.log",
        b"a\\b.txt",
        b"tab\there",
        b"cr\rhere",
        b"latin1-\xe9t\xe9.bin",
        "\u00e9".encode() * 127 + b"x",  # 255 bytes of UTF-8
        b"n" * 255,
    ]
    for i, name in enumerate(names):
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(b"content %d: " % i + name)
    with open(os.path.join(base, b"C:\\big\x7f" + b"b" * 240), "wb") as fh:
        fh.write(os.urandom(3 * CHUNK + 5))  # chunked, under a 249-byte name
    deep = os.path.join(base, *[b"d" * 200] * DEEP_LEVELS)
    os.makedirs(deep)
    with open(os.path.join(deep, b"\xff\tleaf"), "wb") as fh:
        fh.write(b"deep")
    os.symlink(b"../\xfe target", os.path.join(base, b"link\x01"))


def bytes_snapshot(root: Path) -> dict[bytes, tuple]:
    """``snapshot`` by the names' bytes: what a bit-exact restore must reproduce."""
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, base)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as fh:
                    out[rel] = ("file", hashlib.sha256(fh.read()).hexdigest(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def test_every_name_linux_holds_round_trips_bit_exact(ledger: RunLedger, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_odd_tree(src)
    result = syncer(ledger, src).sync("final")
    assert result.committed and result.files == 9
    restored = Restorer(ledger, str(dst)).restore()
    assert restored.manifest is not None and restored.fallbacks == []
    expected = bytes_snapshot(src)
    assert b"n" * 255 in expected and os.path.join(*[b"d" * 200] * DEEP_LEVELS, b"\xff\tleaf") in expected
    assert bytes_snapshot(dst) == expected
    # Restoring again over the same tree keeps everything (and leaves no temporary behind).
    again = Restorer(ledger, str(dst)).restore()
    assert again.files_kept == 9 and bytes_snapshot(dst) == expected


def test_a_path_no_restore_could_create_is_refused_at_sync_naming_it(ledger: RunLedger, tmp_path: Path) -> None:
    """Linux holds paths deeper than PATH_MAX (made relative to a directory fd); no restore can create
    one by its path. The sync says which and commits nothing, instead of a manifest restore refuses."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "fine.txt").write_text("fine")
    fd = os.open(src, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 251 bytes
            os.mkdir("p" * 250, dir_fd=fd)
            fd, parent = os.open("p" * 250, os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
        os.close(os.open("weights.pt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    with pytest.raises(UnstorablePathError, match="PATH_MAX") as caught:
        syncer(ledger, src).sync("final")
    message = str(caught.value)
    assert "/".join(["p" * 250] * 15) in message and "--exclude" in message
    assert ledger.list_manifests() == []
    # Leaving it out makes the rest checkpointable.
    ok = syncer(ledger, src, path_filter=scan.PathFilter(exclude=["p" * 250])).sync("final")
    assert ok.committed and [f.path for f in ok.manifest.files] == ["fine.txt"]


def test_sparse_files_restore_sparse(ledger: RunLedger, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    with open(src / "disk.img", "wb") as fh:  # 2.5 MiB, chunked, 100 bytes of data
        fh.truncate(40 * CHUNK)
        fh.seek(20 * CHUNK + 5000)
        fh.write(b"x" * 100)
    with open(src / "one-object.bin", "wb") as fh:  # one whole object: the chunk size
        fh.write(b"head")
        fh.truncate(CHUNK)
    syncer(ledger, src).sync("final")
    Restorer(ledger, str(dst)).restore()
    for name in ("disk.img", "one-object.bin"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert (dst / "disk.img").stat().st_blocks * 512 <= 16 * 1024  # one 4 KiB block of data, the rest holes
    assert (dst / "one-object.bin").stat().st_blocks * 512 <= 8 * 1024


def test_a_fallback_says_which_checkpoint_and_the_steps_it_costs(ledger: RunLedger, tmp_path: Path, caplog) -> None:
    src = tmp_path / "src"
    src.mkdir()
    step = {"done": 120}
    s = syncer(ledger, src, progress=lambda: dict(step))
    (src / "ckpt").write_text("step 120")
    s.sync("periodic")
    step["done"] = 150
    (src / "ckpt").write_text("step 150!")
    s.sync("final")
    client = boto3.client("s3")
    key = _key_of(ledger, "ckpt")
    client.put_object(Bucket=ledger.location.bucket, Key=key, Body=b"rotten")
    result = Restorer(ledger, str(tmp_path / "dst")).restore()
    assert result.manifest is not None and result.manifest.name == "000001-000001.json"
    assert result.fallback_record() == {
        "newest": "000001-000002.json",
        "restored": "000001-000001.json",
        "newest_step": 150,
        "restored_step": 120,
        "steps_lost": 30,
    }
    assert "restored the older checkpoint 000001-000001.json instead: about 30 steps" in (result.fallback_note() or "")


def test_a_symlink_replaced_during_the_walk_does_not_fail_the_sync(
    ledger: RunLedger, tmp_path: Path, monkeypatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights").write_text("w")
    (src / "latest").symlink_to("weights")
    (src / "gone").symlink_to("weights")
    real_readlink = os.readlink

    def racing_readlink(path, *args, **kwargs):  # the script swaps the links between stat and readlink
        name = os.path.basename(os.fsdecode(path))
        if name == "latest" and os.path.islink(path):
            os.unlink(path)
            Path(path).write_text("now a file")
        elif name == "gone" and os.path.islink(path):
            os.unlink(path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", racing_readlink)
    result = syncer(ledger, src).sync("periodic")
    monkeypatch.setattr(os, "readlink", real_readlink)
    assert result.committed and result.manifest is not None
    assert [f.path for f in result.manifest.files] == ["latest", "weights"] and result.manifest.links == ()
    Restorer(ledger, str(tmp_path / "dst")).restore()
    assert (tmp_path / "dst" / "latest").read_text() == "now a file"


def test_names_of_255_bytes_restore_as_files_chunked_files_and_links(ledger: RunLedger, tmp_path: Path) -> None:
    """Restore's temporary name never exceeds NAME_MAX, however long the target's name is."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / ("s" * 255)).write_text("small")
    (src / ("c" * 240)).write_bytes(os.urandom(2 * CHUNK + 1))
    (src / ("l" * 231)).symlink_to("s" * 255)
    syncer(ledger, src).sync("final")
    Restorer(ledger, str(dst)).restore()
    assert snapshot(dst) == snapshot(src)
