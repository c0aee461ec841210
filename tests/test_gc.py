"""grid-resume gc against moto's server: dry run, retention, a gc during a sync, bit-exact restore after."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from airflow_grid_resume.agent.restore import Restorer
from airflow_grid_resume.ledger.gc import collect_garbage
from airflow_grid_resume.ledger.gc import main as gc_main
from airflow_grid_resume.ledger.store import RunLedger
from tests.test_sync_restore import CHUNK, snapshot, syncer


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
