"""The run's OpenLineage: its datasets as the amazon provider names S3 ones, and the run facet as OpenLineage
serializes it (tests/system/test_model_asset.py reads the same through the provider's file transport)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("airflow.providers.openlineage", reason="the lineage extra is not installed")

from openlineage.client.serde import Serde

from airflow_grid_resume.lineage import RUN_FACET, operator_lineage

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


def test_the_workdir_upload_goes_in_and_the_run_and_model_come_out() -> None:
    lineage = operator_lineage(SUMMARY, has_workdir=True, model_asset_uri="s3://mlb/models/ranker")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("s3://mlb", "grid-runs/nightly/train/run1/manifests/000000-000001.json")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("s3://mlb", "grid-runs/nightly/train/run1"),
        ("s3://mlb", "models/ranker"),
    ]
    facet = json.loads(Serde.to_json(lineage.run_facets[RUN_FACET]))
    assert facet["sessions"] == 3 and facet["interruptions"] == 2 and facet["failures"] == 0
    assert (facet["estimatedCostUsd"], facet["onDemandCostUsd"], facet["spotSeconds"]) == (0.8, 2.0, 7200.0)
    assert facet["finalCheckpoint"] == "s3://mlb/grid-runs/nightly/train/run1/manifests/000003-000004.json"
    assert facet["_schemaURL"].endswith("#/$defs/RunFacet") and facet["_producer"]


def test_no_workdir_no_input_and_no_summary_no_lineage() -> None:
    lineage = operator_lineage(SUMMARY, has_workdir=False, model_asset_uri=None)
    assert lineage.inputs == [] and [d.name for d in lineage.outputs] == ["grid-runs/nightly/train/run1"]
    empty = operator_lineage(None, has_workdir=True, model_asset_uri="s3://mlb/models/ranker")
    assert (empty.inputs, empty.outputs, empty.run_facets) == ([], [], {})
