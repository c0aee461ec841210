"""Ledger formats against moto's server: a v1 run restores and continues in v2, a newer format is
refused, the latest.json pointer (and a stale one), and how many requests a restore makes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import pytest

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.agent.scan import HashCache
from airflow_grid_resume.ledger.errors import ManifestError, UnsupportedFormatError
from airflow_grid_resume.ledger.store import RunLedger
from tests.agent.test_sync import snapshot, syncer
from tests.v1_tree import make_v1_tree

V1_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger-v1"


def _upload_v1(ledger: RunLedger) -> None:
    client = boto3.client("s3")
    for path in sorted(p for p in V1_FIXTURE.rglob("*") if p.is_file()):
        key = ledger.key(str(path.relative_to(V1_FIXTURE)))
        client.put_object(Bucket=ledger.location.bucket, Key=key, Body=path.read_bytes())


def _count_requests(ledger: RunLedger) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(model, **_) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    ledger.client.meta.events.register("before-call.s3", count)
    return counts


def test_a_v1_run_restores_bit_exact_and_continues_in_v2(ledger: RunLedger, tmp_path: Path) -> None:
    _upload_v1(ledger)
    expected = tmp_path / "expected"
    make_v1_tree(expected, version=2)
    dst, cache = tmp_path / "dst", HashCache()
    restored = Restorer(ledger, str(dst), cache=cache).restore()
    assert restored.manifest is not None and restored.manifest.version == 1
    assert restored.manifest.name == "000001-000002.json" and not restored.fallbacks
    assert snapshot(dst) == snapshot(expected)
    # The next session writes v2 on top: the large file's chunks are reused, small files are packed.
    s = syncer(ledger, dst, session=2, cache=cache, last_manifest=restored.manifest)
    result = s.sync("final")
    assert result.committed and result.manifest.version == 2
    assert result.objects_uploaded == 0 and result.packs_uploaded == 1
    raw = json.loads(ledger.get(ledger.key("manifests", "000002-000001.json")))
    assert raw["format"] == "grid-resume-manifest/2"
    again = tmp_path / "again"
    assert Restorer(ledger, str(again)).restore().manifest.name == "000002-000001.json"
    assert snapshot(again) == snapshot(expected)


def test_a_corrupt_v1_object_falls_back_to_the_older_v1_manifest(ledger: RunLedger, tmp_path: Path) -> None:
    _upload_v1(ledger)
    newest = ledger.read_manifest(ledger.list_manifests()[0])
    ckpt = next(f for f in newest.files if f.path == "ckpt")
    ledger.put(ledger.blob_keys(ckpt)[0], b"version 9")  # same length, other bytes
    dst = tmp_path / "dst"
    result = Restorer(ledger, str(dst)).restore()
    assert result.manifest.name == "000001-000001.json" and "corrupt" in result.fallbacks[0][1]
    assert (dst / "ckpt").read_text() == "version 1" and not (dst / "only-in-two").exists()


def test_a_newer_format_is_refused_and_nothing_is_written(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    syncer(ledger, src).sync("final")
    future = {"format": "grid-resume-manifest/3", "session": 2, "seq": 1, "chunk_size": 1, "files": []}
    ledger.put(ledger.key("manifests", "000002-000001.json"), json.dumps(future).encode())
    dst = tmp_path / "dst"
    with pytest.raises(UnsupportedFormatError, match="upgrade airflow-grid-resume"):
        Restorer(ledger, str(dst)).restore()
    assert not dst.exists() or not list(dst.iterdir())  # no fallback to the older one either
    ledger.put(ledger.key("latest.json"), json.dumps({"format": "grid-resume-latest/2", "manifest": "x"}).encode())
    with pytest.raises(UnsupportedFormatError, match=r"latest\.json has format grid-resume-latest/2"):
        Restorer(ledger, str(dst)).restore()


def test_restore_reads_the_pointer_and_finds_a_manifest_it_missed(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(2000))
    s = syncer(ledger, src)
    for i in range(5):
        (src / "step").write_text(str(i))
        s.sync("periodic")
    pointer = json.loads(ledger.get(ledger.key("latest.json")))
    assert pointer["manifest"] == "000001-000005.json"
    counts = _count_requests(ledger)
    dst = tmp_path / "dst"
    restored = Restorer(ledger, str(dst)).restore().manifest
    got = dict(counts)
    assert restored.name == "000001-000005.json"
    # The pointer, one LIST from it, the manifest, one ranged GET per pack run: no LIST of all manifests.
    assert got == {
        "GetObject": 2 + len(restored.pack_hashes()),
        "ListObjectsV2": 1,
    }
    # A sync cut off between its manifest and the pointer: restore still finds the newest manifest.
    (src / "step").write_text("cut off")
    s.ledger.advance_pointer = lambda manifest, etag: etag  # type: ignore[method-assign]
    s.sync("final")
    assert json.loads(ledger.get(ledger.key("latest.json")))["manifest"] == "000001-000005.json"
    again = tmp_path / "again"
    assert Restorer(ledger, str(again)).restore().manifest.name == "000001-000006.json"
    assert (again / "step").read_text() == "cut off"


def test_a_session_keeps_a_bounded_number_of_its_manifests(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    s = syncer(ledger, src, keep_manifests=2)
    for i in range(4):
        (src / "step").write_text(str(i))
        assert s.sync("periodic").committed
    assert [m.name for m in ledger.list_manifests()] == ["000001-000004.json", "000001-000003.json"]
    dst = tmp_path / "dst"
    assert Restorer(ledger, str(dst)).restore().manifest.name == "000001-000004.json"
    assert (dst / "step").read_text() == "3"


def test_records_are_written_with_their_keys_rule_and_read_typed(ledger: RunLedger) -> None:
    """Each record through RunLedger on moto's server: ``once`` keys keep their first content, an
    overwrite key is rewritten, a document as today's dict writers leave it (no format) reads as v1,
    and a newer one is refused."""
    from airflow_grid_resume.ledger import layout, records
    from airflow_grid_resume.ledger.store import ConditionalWriteLost

    launch = records.Launch(instance_id="i-1", instance_type="m5.large", spot_price=0.03, launched_at=1.0)
    ledger.write_record(launch, 1)
    ledger.write_record(launch, 1)  # a retried write of the same bytes is ours
    with pytest.raises(ConditionalWriteLost):
        ledger.write_record(records.Launch(instance_id="i-2"), 1)
    assert ledger.read_launch(1) == launch and ledger.read_launch(2) is None

    ledger.write_record(records.Closed(status="lost", at=2.0), 1)
    ledger.write_record(records.Closed(status="interrupted", at=3.0), 1)
    assert ledger.read_closed(1).status == "interrupted"
    planned = records.LaunchAttempt(session=1, expires_at="2026-01-01T00:00:00Z")
    ledger.write_record(planned, 1, create=True)  # an overwrite key's first write, only if nobody made it first
    with pytest.raises(ConditionalWriteLost):
        ledger.write_record(records.LaunchAttempt(session=1, expires_at="2027-01-01T00:00:00Z"), 1, create=True)
    assert ledger.read_record(records.LaunchAttempt, 1) == planned

    first = ledger.write_record(records.Lease(agent_id="a", expires_at=10.0))  # cas: created with If-None-Match
    with pytest.raises(ConditionalWriteLost):
        ledger.write_record(records.Lease(agent_id="b", expires_at=20.0))
    renewed = records.Lease(agent_id="a", expires_at=30.0)
    second = ledger.write_record(renewed, if_match=first)
    assert ledger.read_record(records.Lease).expires_at == 30.0
    # Its retry after a lost answer meets 412 on the old ETag and finds its own bytes: ours, with their ETag.
    assert ledger.write_record(renewed, if_match=first) == second
    with pytest.raises(ConditionalWriteLost):  # anyone else's write on that ETag lost
        ledger.write_record(records.Lease(agent_id="b", expires_at=40.0), if_match=first)

    # What agents wrote before records (a dict, no format) reads as version 1, unknown fields kept.
    ledger.put_json(ledger.key(layout.heartbeat(1)), {"session": 1, "seq": 3, "state": "running", "extra_field": 1})
    beat = ledger.read_record(records.Heartbeat, 1)
    assert (beat.seq, beat.state, beat.extra) == (3, "running", {"extra_field": 1})

    ledger.put_json(ledger.key(layout.FINAL), {"format": "grid-resume-final/9", "status": "succeeded"})
    with pytest.raises(UnsupportedFormatError, match=r"final\.json has format grid-resume-final/9"):
        ledger.read_final()


def test_the_airflow_sides_readers_take_typed_records(ledger: RunLedger) -> None:
    """summary.read_records, the UI's read_ledger_docs and the reaper's final.json reader, over a run
    whose records both sides wrote, with session start records as older agents wrote them (no format)."""
    from airflow_grid_resume.ledger import layout, records
    from airflow_grid_resume.reaper import run_ended_reader
    from airflow_grid_resume.run.summary import read_records, summarize
    from airflow_grid_resume.ui.model import run_view
    from airflow_grid_resume.ui.source import read_ledger_docs

    ledger.write_record(records.Spec(command=["python", "t.py"], budgets={"max_interruptions": 4}))
    for session, status in ((1, "interrupted"), (2, "succeeded")):
        ledger.put_json(ledger.key(layout.session_record(session)), {"session": session, "instance_id": f"i-{session}"})
        launch = records.Launch(
            instance_id=f"i-{session}", instance_type="m5.large", lifecycle="spot", spot_price=0.036,
            on_demand_price=0.096, launched_at=1000.0 * session, waited_seconds=5,
        )  # fmt: skip
        ledger.write_record(launch, session)
        outcome = records.Outcome(
            session=session, status=status, started_at=f"1970-01-01T00:{session * 16}:50Z",
            ended_at="1970-01-01T00:30:00Z" if session == 1 else "1970-01-01T01:00:00Z",
            progress={"first": 1 if session == 1 else 41, "last": 50 if session == 1 else 100, "total": 100},
        )  # fmt: skip
        ledger.write_record(outcome, session)
        ledger.write_record(records.Closed(status=status, instance_id=f"i-{session}", at=None), session)
    ledger.write_record(records.LaunchAttempt(session=3, expires_at="2026-01-01T00:00:00Z"), 3)  # planned only
    ledger.write_record(records.Final(status="succeeded", session=2, reason="succeeded", at=3600.0))

    summary = summarize(read_records(ledger))
    assert (summary["sessions"], summary["interruptions"], summary["final_outcome"]) == (2, 1, "succeeded")
    assert summary["steps_lost"] == 10  # 50 done in session 1, session 2 resumed from 40
    assert [d["seconds"] for d in summary["session_details"]] == [800.0, 1600.0]

    docs = read_ledger_docs(ledger)
    assert docs["spec"]["budgets"] == {"max_interruptions": 4} and docs["final"]["session"] == 2
    assert docs["sessions"][-1]["attempt"]["expires_at"] == "2026-01-01T00:00:00Z"
    view = run_view(docs, [], now=4000.0, ti_state="success")
    assert [r["status"] for r in view["sessions"]] == ["interrupted", "succeeded"]
    assert view["state"]["phase"] == "succeeded" and view["budgets"]

    assert run_ended_reader(ledger.client)(str(ledger.location), 2) == 2
    assert run_ended_reader(ledger.client)(str(ledger.location), 3) is None  # session 3 was never closed

    ledger.put_json(ledger.key(layout.outcome(4)), {"format": "grid-resume-outcome/2", "session": 4, "status": "x"})
    with pytest.raises(UnsupportedFormatError, match="upgrade airflow-grid-resume"):
        read_records(ledger)


def test_the_run_watchs_reader_parses_records_and_releases_only_a_dead_agents_lease(
    ledger: RunLedger, run_uri: str
) -> None:
    """triggers/run.py's AsyncLedgerReader, on aiobotocore against moto's server: records parse (a heartbeat
    that does not counts as absent, an outcome that does not is an error: written once, it never will; a newer
    one is refused), watch.json is written as its record, and the lease
    release is ``Lease.released_for_dead`` written with If-Match: a live holder's lease is never touched."""
    import asyncio

    from aiobotocore.session import get_session

    from airflow_grid_resume.asyncaws.ledgerreader import AsyncLedgerReader
    from airflow_grid_resume.ledger import layout, records

    ledger.write_record(records.Heartbeat(session=1, seq=4, state="running", log_interval=2.0), 1)
    ledger.put(ledger.key(layout.heartbeat(2)), b"{half")
    ledger.put(ledger.key(layout.outcome(1)), b"{half")
    ledger.put_json(ledger.key(layout.watch(2)), {"format": "grid-resume-watch/9", "log_offset": 5})
    ledger.write_record(records.Lease(agent_id="a", session=1, instance_id="i-1", expires_at=time.time() + 300))

    async def watch() -> None:
        async with get_session().create_client("s3") as s3:
            first, second = AsyncLedgerReader(s3, run_uri, 1), AsyncLedgerReader(s3, run_uri, 2)
            beat = await first.get_record(records.Heartbeat)
            assert beat is not None and (beat.seq, beat.log_interval) == (4, 2.0)
            assert await second.get_record(records.Heartbeat) is None
            with pytest.raises(ManifestError, match=r"outcome\.json"):
                await first.get_record(records.Outcome)
            with pytest.raises(UnsupportedFormatError, match=r"watch\.json has format grid-resume-watch/9"):
                await second.get_record(records.Watch)
            await first.put_record(records.Watch(log_offset=7, at=1.0))
            assert not await second.release_dead_lease("i-2")  # another session's, on another instance
            assert await first.release_dead_lease("i-1")
            assert not await first.release_dead_lease("i-1")  # released already

    asyncio.run(watch())
    lease = ledger.read_record(records.Lease)
    assert lease.released and lease.released_by == "airflow: instance i-1 is gone" and lease.agent_id == "a"
    assert ledger.read_record(records.Watch, 1) == records.Watch(log_offset=7, at=1.0)


def test_log_read_plan() -> None:
    from airflow_grid_resume.ledger.store import plan_log_reads

    p = "run/sessions/000001/logs/"
    listing = [(f"{p}{0:016d}.log", 6), (f"{p}{6:016d}.log", 6), (f"{p}{20:016d}.log", 5), (p + "junk", 1)]
    assert plan_log_reads(listing, p, 0, 100) == [(f"{p}{0:016d}.log", None), (f"{p}{6:016d}.log", None)]  # gap at 12
    assert plan_log_reads(listing, p, 8, 100) == [(f"{p}{6:016d}.log", "bytes=2-")]
    assert plan_log_reads(listing, p, 12, 100) == []
    assert plan_log_reads(listing, p, 0, 3) == [(f"{p}{0:016d}.log", None)]  # the limit is reached
