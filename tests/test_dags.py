"""Every file in dags/ parses with Airflow's DagBag, offline: a broken DAG fails CI.

conftest.py gives the test session its own AIRFLOW_HOME before Airflow is imported. No AWS credentials or
endpoint are needed: DAG files must not talk to AWS (or anything else) while they are parsed.
"""

from __future__ import annotations

import importlib.util
import socket
from datetime import timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def no_network():
    """Parsing must not open a connection: any attempt fails the test instead of hanging."""
    real = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"a DAG file opened a network connection at parse time: {address}")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = real


@pytest.fixture(scope="module")
def dagbag(no_network):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False, bundle_path=DAGS)


def test_the_dags_folder_has_dag_files() -> None:
    assert DAGS.is_dir()
    assert "nightly_training.py" in [p.name for p in DAG_FILES]


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}, "\n\n".join(f"{f}:\n{e}" for f, e in dagbag.import_errors.items())


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_every_file_defines_a_dag(dagbag, path: Path) -> None:
    dags = [dag for dag in dagbag.dags.values() if Path(dag.fileloc).resolve() == path]
    assert dags, f"{path.name} defines no DAG"
    for dag in dags:
        assert dag.task_ids, f"DAG {dag.dag_id} in {path.name} has no tasks"


def test_nightly_training_dag(dagbag) -> None:
    from airflow_grid_resume.operators import GridRunOperator

    assert "nightly_training" in dagbag.dags, sorted(dagbag.dags)
    dag = dagbag.dags["nightly_training"]
    training = {t.task_id: t for t in dag.tasks if isinstance(t, GridRunOperator)}
    assert sorted(training) == ["train_image_classifier", "train_ranker", "train_text_encoder"]
    assert set(dag.task_ids) == {*training, "cost_report"}
    report = dag.get_task("cost_report")
    assert set(report.upstream_task_ids) == set(training)
    assert report.trigger_rule == "all_done"
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.schedule == "0 1 * * *"
    assert set(dag.params) == {"as_of", "extra_args"}
    for task in training.values():
        # Separate budgets: Airflow's retries = failure retries + interruptions.
        assert task.retries == task.failure_retries + task.max_interruptions
        assert task.failure_retries == 1
        assert task.spec.image_id.startswith("ami-")
        assert task.spec.subnet_ids and task.spec.instance_types
        assert "{{ params.as_of or ds }}" in task.command
        assert task.artifacts_uri.startswith("s3://")
    assert training["train_text_encoder"].max_interruptions == 20
    assert training["train_text_encoder"].max_run == timedelta(hours=16).total_seconds()
    assert training["train_ranker"].capacity_wait == timedelta(hours=2).total_seconds()
    assert training["train_image_classifier"].spec.instance_types[0] == "g5.xlarge"


def _load_nightly():
    spec = importlib.util.spec_from_file_location("nightly_training_under_test", DAGS / "nightly_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_come_from_the_environment(monkeypatch, no_network) -> None:
    monkeypatch.setenv("GRID_NIGHTLY_AMI", "ami-0fedcba9876543210")
    monkeypatch.setenv("GRID_NIGHTLY_SUBNETS", "subnet-1, subnet-2,subnet-3")
    monkeypatch.setenv("GRID_NIGHTLY_ARTIFACTS_URI", "s3://other-bucket/nightly/")
    module = _load_nightly()
    task = module.dag.get_task("train_ranker")
    assert task.spec.image_id == "ami-0fedcba9876543210"
    assert task.spec.subnet_ids == ("subnet-1", "subnet-2", "subnet-3")
    assert task.artifacts_uri == "s3://other-bucket/nightly/"


def test_cost_report() -> None:
    module = _load_nightly()
    report = module.build_cost_report(
        {
            "a": {
                "final_outcome": "succeeded",
                "sessions": 3,
                "interruptions": 2,
                "failures": 0,
                "spot_seconds": 7200.0,
                "on_demand_seconds": 0.0,
                "estimated_cost_usd": 0.8,
                "on_demand_cost_usd": 2.0,
            },
            "b": {"final_outcome": "succeeded", "sessions": 1, "estimated_cost_usd": None, "on_demand_cost_usd": None},
            "c": None,
        }
    )
    assert report["failed"] == ["c"]
    assert report["cost_unknown"] == ["b", "c"]
    assert report["estimated_cost_usd"] == 0.8
    assert report["on_demand_cost_usd"] == 2.0
    text = "\n".join(report["lines"])
    assert "60% saved" in text
    assert "no result" in text
    assert any(line.startswith("a ") and "2.00" in line for line in report["lines"])


def test_every_dag_serializes_as_the_dag_processor_stores_it(dagbag) -> None:
    """The scheduler only sees the serialized DAG: the budgets must survive the round trip."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dagbag.dags.items():
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert set(restored.task_ids) == set(dag.task_ids), dag_id
    nightly = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["nightly_training"]))
    assert nightly.get_task("train_text_encoder").retries == 1 + 20


def test_each_nightly_model_is_an_asset_and_the_evaluate_dag_is_scheduled_on_them(dagbag) -> None:
    from airflow.sdk import Asset

    nightly, evaluate = dagbag.dags["nightly_training"], dagbag.dags["evaluate"]
    uris = set()
    for task_id in ("train_image_classifier", "train_text_encoder", "train_ranker"):
        task = nightly.get_task(task_id)
        assert task.outlets == [task.model_asset] and task.model_asset.uri.startswith("s3://")
        uris.add(task.model_asset.uri)
    assert uris == {f"s3://my-ml-artifacts/models/{m}" for m in ("image_classifier", "text_encoder", "ranker")}
    condition = evaluate.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # any new model, not all of them
    assert {a.uri for a in condition.objects if isinstance(a, Asset)} == uris
    assert evaluate.task_ids == ["evaluate"]


def test_the_evaluation_plan_takes_each_models_newest_event() -> None:
    from airflow_grid_resume.run.asset import model_event_extra

    def extra(run: str) -> dict:
        summary = {"run_uri": f"s3://ml-b/grid-runs/{run}", "sessions": 2, "interruptions": 1}
        return model_event_extra(summary, None, bucket="ml-b")

    plan = _load_nightly().evaluation_plan({"ranker": [extra("r1"), extra("r2")], "text_encoder": []})
    assert [(p["model"], p["run_uri"], p["sessions"]) for p in plan] == [("ranker", "s3://ml-b/grid-runs/r2", 2)]
