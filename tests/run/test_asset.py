"""The model's asset: which URIs are accepted, what the asset event says, and what a downstream DAG reads back.
(tests/system/test_model_asset.py runs it on a real Airflow, a DAG scheduled on the asset included.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.run.asset import (
    EVENT_FORMAT,
    model_asset_uri,
    model_event_extra,
    model_from_event,
    read_final_checkpoint,
    restore_model,
)

SUMMARY = {
    "run_uri": "s3://mlb/grid-runs/nightly/train/run1",
    "sessions": 3,
    "interruptions": 2,
    "failures": 0,
    "spot_seconds": 7200.0,
    "on_demand_seconds": 0.0,
    "estimated_cost_usd": 0.8,
    "on_demand_cost_usd": 2.0,
    "last_manifest": "000003-000004.json",
}


def test_the_model_asset_is_an_s3_object_location() -> None:
    class FakeAsset:  # anything with a ``uri``, as airflow.sdk.Asset has
        uri = "s3://mlb/models/ranker"

    assert model_asset_uri(None) is None
    assert model_asset_uri("s3://mlb/models/ranker") == "s3://mlb/models/ranker"
    assert model_asset_uri(FakeAsset()) == "s3://mlb/models/ranker"
    with pytest.raises(
        ValueError, match=re.escape("names a bucket, not a model: add a key, e.g. s3://mlb/models/NAME")
    ):
        model_asset_uri("s3://mlb/")
    with pytest.raises(ValueError, match=r"model_asset must look like s3://BUCKET/PREFIX.*Asset\('s3://"):
        model_asset_uri("gs://ml/models/ranker")
    with pytest.raises(ValueError, match="an Asset or an s3://bucket/key string, got int"):
        model_asset_uri(3)


def test_the_event_says_where_the_checkpoint_is_and_what_the_run_took(ledger, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "model.pt").write_bytes(b"m" * 3000)
    (workdir / "step.txt").write_text("40")
    Syncer(ledger, str(workdir), session=1).sync("final")
    name = ledger.list_manifests()[0].name
    checkpoint = read_final_checkpoint(ledger, name)
    assert checkpoint is not None
    assert (checkpoint.name, checkpoint.session, checkpoint.bytes, checkpoint.files) == (name, 1, 3002, 2)
    assert read_final_checkpoint(ledger, None) is None
    assert read_final_checkpoint(ledger, "000009-000001.json") is None  # named but gone: no checkpoint

    extra = model_event_extra({**SUMMARY, "run_uri": str(ledger.location)}, checkpoint, bucket="b")
    assert extra["format"] == EVENT_FORMAT
    assert extra["checkpoint"] == {
        "manifest": name,
        "manifest_uri": f"s3://b/{ledger.key('manifests', name)}",
        "session": 1,
        "bytes": 3002,
        "files": 2,
    }
    assert (extra["sessions"], extra["interruptions"], extra["failures"]) == (3, 2, 0)
    assert (extra["estimated_cost_usd"], extra["on_demand_cost_usd"], extra["saved_usd"]) == (0.8, 2.0, 1.2)


def test_an_unknown_cost_stays_unknown_and_no_checkpoint_is_none() -> None:
    extra = model_event_extra({**SUMMARY, "estimated_cost_usd": None}, None, bucket="mlb")
    assert extra["checkpoint"] is None and extra["saved_usd"] is None


def test_a_downstream_dag_reads_the_model_back_and_refuses_a_foreign_event() -> None:
    extra = model_event_extra(SUMMARY, None, bucket="mlb")
    model = model_from_event(extra)
    assert (model.run_uri, model.sessions, model.interruptions, model.manifest) == (SUMMARY["run_uri"], 3, 2, None)
    with pytest.raises(ValueError, match="not written by GridRunOperator"):
        model_from_event({"from_rest_api": True})


def test_restore_model_downloads_the_events_checkpoint_and_nothing_else(ledger, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "model.pt").write_bytes(b"weights" * 500)
    Syncer(ledger, str(workdir), session=1).sync("final")
    final = read_final_checkpoint(ledger, ledger.list_manifests()[0].name)
    extra = model_event_extra({**SUMMARY, "run_uri": str(ledger.location)}, final, bucket=ledger.location.bucket)
    model = model_from_event(extra)
    assert restore_model(model, str(tmp_path / "out")) == final.name
    assert (tmp_path / "out" / "model.pt").read_bytes() == b"weights" * 500
    (workdir / "model.pt").write_bytes(b"later" * 500)  # the run went on after the event: a newer checkpoint
    Syncer(ledger, str(workdir), session=2).sync("later")
    with pytest.raises(ValueError, match=f"not the event's {final.name}"):
        restore_model(model, str(tmp_path / "out2"))
