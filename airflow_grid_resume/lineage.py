"""OpenLineage for a run, as the amazon provider's S3 and SageMaker operators report theirs: what the run
read (the workdir as uploaded to the run's ledger: its first snapshot), what it wrote (the run's ledger, and the
model asset when the task has one), and a run facet with its sessions, interruptions and cost.

``GridRunOperator.get_openlineage_facets_on_complete`` calls :func:`operator_lineage`; the OpenLineage
provider (``apache-airflow-providers-openlineage``, the ``lineage`` extra) is imported only then, so the
operator works without it. The datasets are ``namespace = s3://bucket``, ``name = key``, the naming the amazon
provider uses, so they join the same nodes its S3 operators report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attr

from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.uri import parse_s3_uri

RUN_FACET = "gridResumeRun"


def _facet_class() -> type:
    """The run facet's class, made on first use: it subclasses OpenLineage's ``RunFacet``, which is only
    importable with the provider installed."""
    global _FACET
    if _FACET is None:
        from airflow.providers.common.compat.openlineage.facet import RunFacet

        @attr.define
        class GridResumeRunFacet(RunFacet):
            """The spot run behind the task: how many sessions and interruptions it took and what it cost."""

            # OpenLineage facets name their fields in camelCase
            runUri: str
            sessions: int
            interruptions: int
            failures: int
            spotSeconds: float | None = None
            onDemandSeconds: float | None = None
            estimatedCostUsd: float | None = None
            onDemandCostUsd: float | None = None
            finalCheckpoint: str | None = None

        _FACET = GridResumeRunFacet
    return _FACET


_FACET: type | None = None


def s3_dataset(uri: str) -> Any:
    """An OpenLineage dataset for ``s3://bucket/key`` (the amazon provider's ``path_to_s3_dataset`` naming)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    location = parse_s3_uri(uri, what="dataset")
    return Dataset(namespace=f"s3://{location.bucket}", name=location.prefix or "/", facets={})


def run_facet(summary: Mapping[str, Any]) -> Any:
    """The ``gridResumeRun`` facet from the run summary (``GridRunOperator``'s return value)."""
    last = summary.get("last_manifest")
    run_uri = str(summary.get("run_uri") or "")
    return _facet_class()(
        runUri=run_uri,
        sessions=int(summary.get("sessions") or 0),
        interruptions=int(summary.get("interruptions") or 0),
        failures=int(summary.get("failures") or 0),
        spotSeconds=summary.get("spot_seconds"),
        onDemandSeconds=summary.get("on_demand_seconds"),
        estimatedCostUsd=summary.get("estimated_cost_usd"),
        onDemandCostUsd=summary.get("on_demand_cost_usd"),
        finalCheckpoint=f"{run_uri.rstrip('/')}/{layout.MANIFESTS}/{last}" if last and run_uri else None,
    )


def operator_lineage(summary: Mapping[str, Any] | None, *, has_workdir: bool, model_asset_uri: str | None) -> Any:
    """The ``OperatorLineage`` of a finished run. ``summary`` None (the try ended without one): no lineage."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    if not summary or not summary.get("run_uri"):
        return OperatorLineage()
    run_uri = str(summary["run_uri"]).rstrip("/")
    inputs = [s3_dataset(f"{run_uri}/{layout.manifest(0, 1)}")] if has_workdir else []
    outputs = [s3_dataset(run_uri)]
    if model_asset_uri:
        outputs.append(s3_dataset(model_asset_uri))
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={RUN_FACET: run_facet(summary)})
