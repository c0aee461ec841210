"""GridRunOperator's ``model_asset``: it becomes one of the task's outlets, a wrong one is refused by name."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG, Asset

from airflow_grid_resume.operators import GridRunOperator
from tests.conftest import OPERATOR_ARGS

ARGS = {k: v for k, v in OPERATOR_ARGS.items() if k != "task_id"}


def test_the_model_asset_is_an_outlet_once() -> None:
    with DAG("asset_outlets", schedule=None):
        by_uri = GridRunOperator(task_id="a", model_asset="s3://ml-models/models/ranker", **ARGS)
        given = Asset("s3://ml-models/models/text")
        both = GridRunOperator(task_id="b", model_asset=given, outlets=[given], **ARGS)
        none = GridRunOperator(task_id="c", **ARGS)
    assert by_uri.outlets == [Asset("s3://ml-models/models/ranker")] == [by_uri.model_asset]
    assert both.outlets == [given] and both.model_asset is given
    assert none.outlets == [] and none.model_asset is None


def test_a_model_asset_that_is_no_s3_key_is_refused() -> None:
    with (
        DAG("asset_refused", schedule=None),
        pytest.raises(ValueError, match="model_asset 's3://ml-models' names a bucket, not a model"),
    ):
        GridRunOperator(task_id="a", model_asset="s3://ml-models", **ARGS)


def test_no_summary_no_lineage() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    with DAG("asset_lineage", schedule=None):
        task = GridRunOperator(task_id="a", model_asset="s3://ml-models/models/ranker", **ARGS)
    lineage = task.get_openlineage_facets_on_complete(None)  # a try that did not succeed left no summary
    assert (lineage.inputs, lineage.outputs) == ([], [])
