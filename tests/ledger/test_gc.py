"""grid-resume gc against moto's server: dry run, retention, a gc during a sync, bit-exact restore after."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.ledger.checkpoints import MARKED, manifest_extra
from airflow_grid_resume.ledger.gc import collect_garbage
from airflow_grid_resume.ledger.gc import main as gc_main
from airflow_grid_resume.ledger.store import RunLedger
from tests.agent.test_sync import CHUNK, snapshot, syncer


def _stored(ledger: RunLedger) -> set[str]:
    return {item["Key"] for item in ledger.list(ledger.location.key(""))}


def _versions(ledger: RunLedger, src: Path, n: int) -> None:
    s = syncer(ledger, src)
    (src / "static").mkdir(parents=True)
    for i in range(20):
        (src / "static" / f"s{i}").write_bytes(os.urandom(500))
    for v in range(n):
        (src / "ckpt.bin").write_bytes(os.urandom(3 * CHUNK))  # chunked: new objects every version
        (src / f"step-{v}.txt").write_text(f"step {v}")  # small: one new pack every version
        if v:
            (src / f"step-{v - 1}.txt").unlink()
        assert s.sync("periodic").committed


def test_dry_run_reports_and_apply_keeps_the_newest_bit_exact(ledger: RunLedger, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    _versions(ledger, src, 4)
    before = _stored(ledger)
    assert gc_main(["--run-uri", str(ledger.location), "--keep", "2", "--grace-minutes", "0"]) == 0
    report = capsys.readouterr().out
    assert "would delete 2" in report and "dry run: nothing was deleted" in report
    assert _stored(ledger) == before
    plan = collect_garbage(ledger, keep=2, grace=0, apply=True)
    assert [m.name for m in plan.manifests] == ["000001-000002.json", "000001-000001.json"]
    assert [m.name for m in ledger.list_manifests()] == ["000001-000004.json", "000001-000003.json"]
    # The two oldest checkpoints' own bytes are gone: 2 x 3 chunks, and the first pack (its static
    # files live on in it, so it stays; the second version's pack held only step-1.txt).
    assert sum("/objects/" in b.key for b in plan.blobs) == 6 and sum("/packs/" in b.key for b in plan.blobs) == 1
    assert plan.dead_pack_bytes > 0  # step-0.txt inside the first pack: kept with it
    assert len(_stored(ledger)) == len(before) - 2 - 7
    dst = tmp_path / "dst"
    assert Restorer(ledger, str(dst)).restore().manifest.name == "000001-000004.json"
    assert snapshot(dst) == snapshot(src)
    again = collect_garbage(ledger, keep=2, grace=0, apply=True)
    assert (again.manifests, again.blobs) == ([], [])


def test_gc_during_a_sync_keeps_what_the_uncommitted_manifest_needs(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _versions(ledger, src, 2)
    s = syncer(ledger, src, session=2, last_manifest=ledger.read_manifest(ledger.list_manifests()[0]))
    (src / "ckpt.bin").write_bytes(os.urandom(3 * CHUNK))
    (src / "new.txt").write_text("written while gc runs")
    uploaded, resume = threading.Event(), threading.Event()
    commit = ledger.commit_manifest

    def paused_commit(manifest):  # every pack and object is uploaded; the manifest is not yet written
        uploaded.set()
        assert resume.wait(30)
        return commit(manifest)

    s.ledger = type("Paused", (), {"__getattr__": lambda _, n: getattr(ledger, n)})()
    s.ledger.commit_manifest = paused_commit
    sync = threading.Thread(target=s.sync, args=("periodic",))
    sync.start()
    try:
        assert uploaded.wait(30)
        # What a gc without the grace period would delete though every manifest is kept: the sync's
        # 3 new chunks and its new pack, which no committed manifest references yet.
        in_flight = {b.key for b in collect_garbage(ledger, keep=5, grace=0).blobs}
        assert len(in_flight) == 4
        plan = collect_garbage(ledger, keep=1, grace=600, apply=True)
        assert in_flight <= {b.key for b in plan.young}
        assert [m.name for m in plan.manifests] == ["000001-000001.json"]
    finally:
        resume.set()
        sync.join(30)
    assert [m.name for m in ledger.list_manifests()] == ["000002-000001.json", "000001-000002.json"]
    dst = tmp_path / "dst"
    assert Restorer(ledger, str(dst)).restore().manifest.name == "000002-000001.json"
    assert snapshot(dst) == snapshot(src)


def test_the_operator_keeps_its_newest_checkpoints_when_a_run_succeeds(ledger: RunLedger, tmp_path: Path) -> None:
    from airflow_grid_resume.operators import GridRunOperator
    from tests.conftest import OPERATOR_ARGS

    src = tmp_path / "src"
    _versions(ledger, src, 4)
    GridRunOperator(**OPERATOR_ARGS, keep_checkpoints=None)._retain(ledger)  # None: keep everything
    assert len(ledger.list_manifests()) == 4
    GridRunOperator(**OPERATOR_ARGS, keep_checkpoints=2)._retain(ledger)
    assert [m.name for m in ledger.list_manifests()] == ["000001-000004.json", "000001-000003.json"]
    dst = tmp_path / "dst"
    Restorer(ledger, str(dst)).restore()
    assert snapshot(dst) == snapshot(src)


GRACE = 2.0  # seconds: S3 dates objects to the second (HEAD's Last-Modified)


def _two_checkpoints(ledger: RunLedger, src: Path) -> tuple[bytes, list[str]]:
    """Session 1 commits ``ckpt.bin`` = OLD, then other bytes; OLD's objects (the keys returned) are then
    referenced only by the oldest manifest and older than the grace period."""
    src.mkdir()
    old = os.urandom(2 * CHUNK)
    s = syncer(ledger, src)
    for data in (old, os.urandom(2 * CHUNK)):
        (src / "ckpt.bin").write_bytes(data)
        (src / "n.txt").write_bytes(os.urandom(100))
        assert s.sync("periodic").committed
    time.sleep(GRACE + 1.5)  # OLD's objects age past gc's grace period
    keys = [ledger.object_key(hashlib.sha256(old[i : i + CHUNK]).hexdigest()) for i in (0, CHUNK)]
    return old, keys


def _newest_is_whole_and_restores_bit_exact(ledger: RunLedger, src: Path, dst: Path) -> str:
    newest = ledger.list_manifests()[0]
    stored = _stored(ledger)
    manifest = ledger.read_manifest(newest)
    missing = [k for f in manifest.files for k in ledger.blob_keys(f) if k not in stored]
    assert missing == [], f"manifest {newest.name} points at deleted bytes"
    restored = Restorer(ledger, str(dst)).restore()
    assert (restored.manifest.name, restored.fallbacks) == (newest.name, [])
    assert snapshot(dst) == snapshot(src)
    return newest.name


def test_gc_keeps_old_bytes_a_sync_writes_again_between_its_list_and_its_delete(
    ledger: RunLedger, tmp_path: Path, monkeypatch
) -> None:
    """A file reverted to bytes only an old checkpoint held: the sync writes their key again after gc listed
    it (with its old date) and commits after gc listed the manifests. gc must judge the age when it deletes."""
    import airflow_grid_resume.ledger.gc as gc_module

    src = tmp_path / "src"
    old, keys = _two_checkpoints(ledger, src)
    s = syncer(ledger, src, last_manifest=ledger.read_manifest(ledger.list_manifests()[0]))
    s.seq = 2
    uploaded, resume = threading.Event(), threading.Event()
    commit = ledger.commit_manifest

    def paused_commit(manifest):  # every object is written; the manifest is not yet
        uploaded.set()
        assert resume.wait(30)
        return commit(manifest)

    s.ledger = type("Paused", (), {"__getattr__": lambda _, n: getattr(ledger, n)})()
    s.ledger.commit_manifest = paused_commit
    sync = threading.Thread(target=s.sync, args=("periodic",))
    real_plan = gc_module.plan_gc

    def plan_then_revert(*args, **kwargs):  # gc has listed bytes and manifests, and not deleted anything yet
        plan = real_plan(*args, **kwargs)
        assert set(keys) <= {b.key for b in plan.blobs}  # by the listing, OLD's objects are old garbage
        (src / "ckpt.bin").write_bytes(old)
        sync.start()
        assert uploaded.wait(30)
        return plan

    monkeypatch.setattr(gc_module, "plan_gc", plan_then_revert)
    try:
        plan = collect_garbage(ledger, keep=1, grace=GRACE, apply=True)
    finally:
        resume.set()
        sync.join(30)
    assert _newest_is_whole_and_restores_bit_exact(ledger, src, tmp_path / "dst1") == "000001-000003.json"
    assert set(keys) <= {b.key for b in plan.young} and plan.damaged == []
    (src / "n.txt").write_bytes(os.urandom(100))  # the next sync reuses the newest manifest's objects
    assert s.sync("periodic").committed
    assert _newest_is_whole_and_restores_bit_exact(ledger, src, tmp_path / "dst2") == "000001-000004.json"


def test_a_sync_uploads_again_what_a_gc_deleted_right_after_the_sync_wrote_it(
    ledger: RunLedger, tmp_path: Path
) -> None:
    """The narrowest race: gc's HEAD found OLD's object old, the sync wrote it again, then gc's DELETE landed.
    The sync checks the keys it wrote over existing ones after committing, and uploads the lost ones again in
    a new manifest: the newest checkpoint is whole and later syncs never reuse a deleted key."""
    src = tmp_path / "src"
    old, keys = _two_checkpoints(ledger, src)
    client = ledger.client
    deleted: list[str] = []

    class GcDeletesRightAfter:
        def __getattr__(self, name):
            return getattr(client, name)

        def put_object(self, **kw):
            resp = client.put_object(**kw)
            if kw["Key"] in keys and "IfNoneMatch" not in kw and kw["Key"] not in deleted:
                client.delete_object(Bucket=kw["Bucket"], Key=kw["Key"])  # gc's DELETE, decided before the PUT
                deleted.append(kw["Key"])
            return resp

    racing = RunLedger(GcDeletesRightAfter(), ledger.location)
    s = syncer(racing, src, last_manifest=ledger.read_manifest(ledger.list_manifests()[0]))
    s.seq = 2
    (src / "ckpt.bin").write_bytes(old)
    assert s.sync("periodic").committed
    assert sorted(deleted) == sorted(keys)
    _newest_is_whole_and_restores_bit_exact(ledger, src, tmp_path / "dst1")
    (src / "n.txt").write_bytes(os.urandom(100))
    assert s.sync("periodic").committed
    _newest_is_whole_and_restores_bit_exact(ledger, src, tmp_path / "dst2")


def test_a_sync_slower_than_its_commit_window_redates_its_uploads_and_replaces_lost_ones(
    ledger: RunLedger, tmp_path: Path
) -> None:
    """A sync that takes longer than its commit window (here 0 s) re-dates what it uploaded before it
    commits, so gc's grace period counts from the commit; an upload a gc already deleted (it was older
    than the grace) is uploaded again, and the checkpoint committed is whole."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(2 * CHUNK)
    (src / "ckpt.bin").write_bytes(data)
    first = ledger.object_key(hashlib.sha256(data[:CHUNK]).hexdigest())
    client = ledger.client
    deleted: list[str] = []

    class GcDeletesOldUploads:
        def __getattr__(self, name):
            return getattr(client, name)

        def put_object(self, **kw):
            resp = client.put_object(**kw)
            if kw["Key"] == first and not deleted:
                client.delete_object(Bucket=kw["Bucket"], Key=kw["Key"])  # it aged past the grace before the commit
                deleted.append(kw["Key"])
            return resp

    s = syncer(RunLedger(GcDeletesOldUploads(), ledger.location), src, commit_window=0)
    assert s.sync("periodic").committed and deleted == [first]
    assert _newest_is_whole_and_restores_bit_exact(ledger, src, tmp_path / "dst") == "000001-000001.json"


def _marker_run(ledger: RunLedger, src: Path, **kw) -> dict[str, bytes]:
    """A marker run's session: one complete checkpoint (a capture), then three torn ones (unclean final syncs).
    Returns the complete one's files."""
    s = syncer(ledger, src, **kw)
    src.mkdir(parents=True)
    complete: dict[str, bytes] = {}
    for v in range(4):
        (src / "a.json").write_text(f'{{"step": {v}}}')
        (src / "b.json").write_text(f'{{"step": {v if v == 0 else v - 1}}}')  # torn after the first
        if v == 0:
            complete = {name: (src / name).read_bytes() for name in ("a.json", "b.json")}
        assert s.sync("periodic", extra=manifest_extra(True, MARKED if v == 0 else None)).committed
    return complete


def test_a_marker_runs_newest_complete_checkpoint_survives_gc_and_the_agents_pruning(
    ledger: RunLedger, tmp_path: Path
) -> None:
    """Keeping only the newest N would leave nothing but torn checkpoints to resume from: gc and the agent's
    own pruning keep the newest complete one too, and restore picks it."""
    complete = _marker_run(ledger, tmp_path / "src", keep_manifests=2)
    names = [m.name for m in ledger.list_manifests()]
    assert names == ["000001-000004.json", "000001-000003.json", "000001-000001.json"]  # the agent kept #1
    plan = collect_garbage(ledger, keep=2, grace=0, apply=True)
    assert plan.kept == names and plan.manifests == []
    dst = tmp_path / "dst"
    assert Restorer(ledger, str(dst)).restore().manifest.name == "000001-000001.json"
    assert {name: (dst / name).read_bytes() for name in ("a.json", "b.json")} == complete


def test_without_markers_gc_keeps_the_newest_only(ledger: RunLedger, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _versions(ledger, src, 3)
    assert [m.name for m in collect_garbage(ledger, keep=1, grace=0, apply=True).manifests] == [
        "000001-000002.json",
        "000001-000001.json",
    ]
