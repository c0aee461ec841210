"""Pure logic, no server: paths, manifests, exit classification, filters, the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace

import pytest

from airflow_grid_resume.agent.imds import parse_instance_action
from airflow_grid_resume.agent.outcome import FAILED, INTERRUPTED, SUCCEEDED, classify
from airflow_grid_resume.agent.restore import RestoreResult, plan_pack_reads
from airflow_grid_resume.agent.scan import Digest, HashCache, PathFilter
from airflow_grid_resume.ledger.errors import ManifestError, UnsafePathError, UnsupportedFormatError, UsageError
from airflow_grid_resume.ledger.manifest import (
    FORMAT,
    FileEntry,
    LinkEntry,
    Manifest,
    as_current,
    chunk_root,
    parse_manifest,
    parse_manifest_name,
)
from airflow_grid_resume.ledger.paths import check_relative_path, safe_target, storable_path
from airflow_grid_resume.ledger.uri import parse_s3_uri

SHA = hashlib.sha256(b"x").hexdigest()
PACK = hashlib.sha256(b"pack").hexdigest()


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


def test_a_fallback_says_which_checkpoint_and_how_many_steps() -> None:
    older = Manifest(1, 1, "t", "final")
    why = ("000002-000001.json", "pack 12ab is corrupt")
    result = RestoreResult(older, fallbacks=[why], steps={"000002-000001.json": 20, "000001-000001.json": 12})
    assert result.steps_lost == 8
    assert result.fallback_record() == {
        "newest": "000002-000001.json",
        "restored": "000001-000001.json",
        "newest_step": 20,
        "restored_step": 12,
        "steps_lost": 8,
    }
    note = result.fallback_note() or ""
    assert "000002-000001.json" in note and "corrupt" in note and "restored the older checkpoint 000001-000001.json"
    assert "about 8 steps" in note
    unknown = RestoreResult(older, fallbacks=[why]).fallback_note() or ""
    assert "unknown" in unknown and "000001-000001.json" in unknown
    assert RestoreResult(older).fallback_note() is None and RestoreResult(older).fallback_record() is None


def test_safe_target_refuses_symlinked_parent(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="not a directory"):
        safe_target(str(root), "link/passwd")
    assert safe_target(str(root), "dir/file") == str(root / "dir" / "file")


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


def test_pack_reads_merge_neighbours_and_split_far_apart_files() -> None:
    def f(name: str, offset: int, size: int) -> FileEntry:
        return FileEntry(name, size, 0o644, 0, SHA, pack=PACK, offset=offset)

    files = [f("c", 5_000_000, 10), f("a", 0, 100), f("b", 100, 50), f("dup", 0, 100), f("d", 5_000_010, 5)]
    runs = plan_pack_reads(files, gap=1024)
    assert [[x.path for x in run] for run in runs] == [["a", "dup", "b"], ["c", "d"]]


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


# -- exit classification table ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("returncode", "signalled", "killed", "status", "clean", "agent_exit"),
    [
        (0, False, False, SUCCEEDED, True, 0),
        (1, False, False, FAILED, False, 1),
        (127, False, False, FAILED, False, 127),
        (-9, False, False, FAILED, False, 137),  # killed by someone else, no notice: a failure
        (0, True, False, INTERRUPTED, True, 0),  # the contract
        (143, True, False, INTERRUPTED, True, 0),  # accepted with a warning
        (-15, True, False, INTERRUPTED, True, 0),
        (3, True, False, INTERRUPTED, False, 0),  # after our SIGTERM: interrupted, not failed
        (-9, True, True, INTERRUPTED, False, 0),  # killed after the deadline
    ],
)
def test_exit_classification(returncode, signalled, killed, status, clean, agent_exit) -> None:
    c = classify(returncode, signalled=signalled, killed_after_deadline=killed)
    assert (c.status, c.clean, c.agent_exit_code) == (status, clean, agent_exit)
    if returncode in (143, -15):
        assert any("143" in w for w in c.warnings)


def test_uri_errors_say_what_to_fix() -> None:
    assert parse_s3_uri("s3://my-bucket/a/b/").prefix == "a/b"
    for bad in ("http://x/y", "s3://", "s3://UPPER/x", "s3://b/../x"):
        with pytest.raises(UsageError, match="--run-uri"):
            parse_s3_uri(bad)


def test_notice_parsing() -> None:
    action, when = parse_instance_action(b'{"action": "terminate", "time": "2026-11-24T10:00:00Z"}')
    assert action == "terminate" and when == 1795514400.0
    for bad in (b"oops", b'{"action": "reboot", "time": "2026-11-24T10:00:00Z"}', b'{"action": "stop"}'):
        with pytest.raises(ValueError):
            parse_instance_action(bad)


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


def _stat(**kw):
    base = dict(st_size=1, st_mtime_ns=0, st_ctime_ns=0, st_ino=1, st_dev=1)
    base.update(kw)
    return SimpleNamespace(**base)


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


def test_airflow_discovers_the_provider_and_its_links() -> None:
    import subprocess
    import sys

    code = (
        "from airflow.providers_manager import ProvidersManager as P\n"
        "p = P()\n"
        "info = p.providers['airflow-grid-resume']\n"
        "print(info.version)\n"
        "print(sorted(c for c in p.extra_links_class_names if 'grid_resume' in c))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "0.1.0" in out
    assert "airflow_grid_resume.links.GridArtifactsLink" in out and "airflow_grid_resume.links.GridInstanceLink" in out


def test_log_read_plan() -> None:
    from airflow_grid_resume.ledger.store import plan_log_reads

    p = "run/sessions/000001/logs/"
    listing = [(f"{p}{0:016d}.log", 6), (f"{p}{6:016d}.log", 6), (f"{p}{20:016d}.log", 5), (p + "junk", 1)]
    assert plan_log_reads(listing, p, 0, 100) == [(f"{p}{0:016d}.log", None), (f"{p}{6:016d}.log", None)]  # gap at 12
    assert plan_log_reads(listing, p, 8, 100) == [(f"{p}{6:016d}.log", "bytes=2-")]
    assert plan_log_reads(listing, p, 12, 100) == []
    assert plan_log_reads(listing, p, 0, 3) == [(f"{p}{0:016d}.log", None)]  # the limit is reached


def test_resumed_means_an_earlier_sessions_checkpoint_not_the_workdir_snapshot() -> None:
    from airflow_grid_resume.agent.session import command_env

    def resumed(manifest: str | None) -> str:
        env = command_env({}, session=2, run_uri="s3://b/r", workdir="/w", manifest=manifest, instance_id=None)
        return env["GRID_RESUME_RESUMED"]

    assert resumed(None) == "0"
    assert resumed("000000-000001.json") == "0"  # only the code snapshot: a fresh start
    assert resumed("000001-000003.json") == "1"


def test_unwatched_guard_counts_from_the_last_new_etag() -> None:
    from airflow_grid_resume.agent.unwatched import UnwatchedGuard

    guard = UnwatchedGuard(timeout=100.0, now=0.0)
    assert guard.due(0.0) and not guard.observe(None, 0.0)
    assert not guard.due(10.0) and guard.due(25.0)  # looks every timeout/4 (at most every minute)
    assert not guard.observe('"a"', 90.0)  # a watcher wrote: the clock restarts at 90
    assert not guard.observe('"a"', 180.0)  # same ETag: nobody wrote since 90
    assert guard.observe('"a"', 191.0) and guard.silent_for(191.0) == 101.0
    assert not UnwatchedGuard(timeout=0.0, now=0.0).due(1e9)  # 0 turns it off
    assert not guard.observe('"b"', 200.0)


def test_describe_batcher_answers_requests_made_while_a_call_is_in_flight() -> None:
    import asyncio

    from airflow_grid_resume.asyncaws.describe import DescribeBatcher

    class SlowEC2:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []
            self.gate = asyncio.Event()

        async def describe_instances(self, Filters: list[dict]) -> dict:
            ids = Filters[0]["Values"]
            self.calls.append(list(ids))
            await self.gate.wait()
            return {"Reservations": [{"Instances": [{"InstanceId": i, "State": {"Name": "running"}}]} for i in ids]}

    async def scenario() -> None:
        ec2, batcher = SlowEC2(), DescribeBatcher(window=0.01, max_ids=2)
        first = [asyncio.create_task(batcher.state(ec2, i)) for i in ("i-1", "i-2", "i-3")]
        while not ec2.calls:
            await asyncio.sleep(0.005)
        late = asyncio.create_task(batcher.state(ec2, "i-4"))  # arrives while the first call is in flight
        ec2.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*first, late), timeout=5)
        assert [r["InstanceId"] for r in results] == ["i-1", "i-2", "i-3", "i-4"]
        assert ec2.calls == [["i-1", "i-2"], ["i-3"], ["i-4"]]  # at most max_ids per call

    asyncio.run(scenario())


def test_fast_timestamps_match_botocore() -> None:
    from botocore.utils import parse_timestamp

    from airflow_grid_resume.asyncaws.clients import fast_timestamp

    for value in ("2026-11-25T11:00:00.000Z", "2026-11-25T11:00:00Z", "Wed, 25 Nov 2026 11:00:00 GMT", 1764068400):
        assert fast_timestamp(value) == parse_timestamp(value)
        assert fast_timestamp(value).utcoffset() == parse_timestamp(value).utcoffset()


def test_docs_list_every_key_of_the_layout_and_its_writers() -> None:
    """docs/ledger.md is checked against the contract in code: every key, and "Airflow side" for keys
    only the Airflow side writes."""
    from pathlib import Path

    from airflow_grid_resume.ledger import layout

    docs = (Path(__file__).parent.parent / "docs" / "ledger.md").read_text()
    block = docs.split("```", 2)[1]
    lines = [line.strip() for line in block.splitlines()]
    for rule in layout.RULES:
        found = [line for line in lines if line.startswith(rule.key + " ")]
        assert found, f"docs/ledger.md does not list {rule.key}"
        assert ("Airflow side" in found[0]) == (rule.writers == ("airflow",)), found[0]
    assert layout.log_chunk(3, 42) == "sessions/000003/logs/0000000000000042.log"
    assert layout.manifest(1, 2) == "manifests/000001-000002.json"


def test_docs_ledger_table_is_the_rules_and_records_in_code() -> None:
    """docs/ledger.md's "Who writes what" table: one row per rule, its writers, its condition, and the
    record and format of every document that has one, exactly as ledger/layout.py and records.py say."""
    from pathlib import Path

    from airflow_grid_resume.ledger import layout, records
    from airflow_grid_resume.ledger.manifest import FORMAT

    docs = (Path(__file__).parent.parent / "docs" / "ledger.md").read_text()
    table = docs.split("## Who writes what, and how", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("key", "---"):
            rows[cells[0]] = cells[1:]
    assert list(rows) == [rule.key for rule in layout.RULES]
    writers = {("airflow",): "Airflow side", ("agent",): "agent", ("agent", "airflow"): "both"}
    by_key = {cls.KEY: (cls.__name__, cls.format()) for cls in records.ALL}
    by_key[layout.POINTER] = ("Pointer", f"{layout.POINTER_FORMAT_PREFIX}{layout.POINTER_FORMAT_VERSION}")
    by_key["manifests/SSSSSS-NNNNNN.json"] = ("Manifest", FORMAT)
    for rule in layout.RULES:
        written_by, how, record, fmt = rows[rule.key]
        assert (written_by, how) == (writers[rule.writers], rule.how), rule.key
        assert (record, fmt) == by_key.get(rule.key, ("-", fmt)), rule.key
        assert record == "-" or fmt.startswith("grid-resume-"), rule.key


def test_docs_ledger_lists_every_field_of_every_record() -> None:
    """Each record's bullet in docs/ledger.md ("- `outcome.json`: ...", "`lease.json` holds ...") names every
    one of its fields."""
    import dataclasses
    import re
    from pathlib import Path

    from airflow_grid_resume.ledger import records

    docs = (Path(__file__).parent.parent / "docs" / "ledger.md").read_text()
    bullets = re.findall(r"^(?:- )?`([\w.-]+\.json)`(?::| holds) (.*?)(?=^- |^\n|^## |\Z)", docs, re.M | re.S)
    by_name = {name: set(re.findall(r"`(\w+)`", text)) for name, text in bullets}
    for cls in records.ALL:
        name = cls.KEY.rsplit("/", 1)[-1]
        assert name in by_name, f"docs/ledger.md has no bullet for {name}"
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        assert fields <= by_name[name], f"{name}: docs/ledger.md does not name {sorted(fields - by_name[name])}"


def test_pointer_record_round_trip_and_refusal() -> None:
    from airflow_grid_resume.ledger.layout import Pointer

    p = Pointer("000002-000003.json", 2, 3, "t")
    assert Pointer.from_json(p.to_json()) == p
    assert Pointer.from_json(b"{nope") is None and Pointer.from_json(b'{"format": "x/1"}') is None
    with pytest.raises(UnsupportedFormatError):
        Pointer.from_json(b'{"format": "grid-resume-latest/2", "manifest": "000001-000001.json"}')


def test_no_ledger_key_is_spelled_outside_the_layout() -> None:
    """The package and the benchmarks build every key from ledger/layout.py (tests may spell them)."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    package = root / "airflow_grid_resume"
    key = re.compile(
        r"""["']/?(?:(?:spec|final|lease|latest|session|heartbeat|outcome|launch-attempt|launch|watch|closed)\.json"""
        r"""|agent/grid-resume-agent\.pyz|manifests/|packs/|objects/sha256/?)["']"""
    )
    sources = [*package.rglob("*.py"), *(root / "benchmarks").glob("*.py")]
    offenders = sorted(
        rel
        for path in sources
        if (rel := str(path.relative_to(package if package in path.parents else root))) != "ledger/layout.py"
        and key.search(path.read_text())
    )
    assert not offenders, f"keys spelled outside ledger/layout.py: {offenders}"


def test_agent_keep_manifests_option() -> None:
    """``--keep-manifests N`` reaches the Syncer's per-session bound through AgentOptions; 0 keeps all,
    a negative or fractional number is a usage error (exit 2) saying what is wrong."""
    import argparse

    from airflow_grid_resume.agent import cli
    from airflow_grid_resume.agent.sync import MANIFESTS_PER_SESSION

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    base = ["--run-uri", "s3://b/r", "--workdir", "/tmp/w"]
    assert cli.options_from(parser.parse_args([*base, "--", "true"])).keep_manifests == MANIFESTS_PER_SESSION
    assert cli.options_from(parser.parse_args([*base, "--keep-manifests", "0", "--", "true"])).keep_manifests == 0
    assert cli.options_from(parser.parse_args([*base, "--keep-manifests", "5", "--", "true"])).keep_manifests == 5
    assert cli.main([*base, "--keep-manifests", "-1", "--", "true"]) == 2
    assert cli.main([*base, "--keep-manifests", "2.5", "--", "true"]) == 2
