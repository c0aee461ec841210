"""The trained model as an Airflow Asset: which asset a run announces, and what its asset event says.

A run that succeeds emits one asset event on the operator's ``model_asset`` (an ``s3://bucket/key`` URI, the
scheme Airflow's amazon provider registers), so a DAG scheduled on that asset runs once per new model. The
event's ``extra`` (:func:`model_event_extra`) tells that DAG where the final checkpoint is (the run's ledger,
the manifest's key and the bytes and files it holds) and what it took (sessions, interruptions, failures,
seconds, cost against on-demand): plain JSON, as Airflow stores an event's extra.

Pure, but for :func:`read_final_checkpoint`, the one ledger read the event needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_grid_resume.ledger.errors import UsageError
from airflow_grid_resume.ledger.manifest import Manifest
from airflow_grid_resume.ledger.uri import parse_s3_uri

# The extra's format: a downstream DAG can refuse one it does not know (``model_from_event``).
EVENT_FORMAT = "grid-resume-model/1"


def model_asset_uri(value: Any) -> str | None:
    """The model asset's URI from the operator's ``model_asset`` (an ``Asset`` or a URI string), or None.

    It must name an object location, ``s3://bucket/key``: the scheme Airflow users (and the amazon
    provider's OpenLineage conversion) recognise, with a key, since a bucket alone names no model."""
    if value is None:
        return None
    uri = getattr(value, "uri", value)
    if not isinstance(uri, str):
        raise ValueError(f"model_asset must be an Asset or an s3://bucket/key string, got {type(value).__name__}")
    try:
        location = parse_s3_uri(uri, what="model_asset")
    except UsageError as exc:
        raise ValueError(f"{exc} (the model's asset, e.g. Asset('s3://my-bucket/models/ranker'))") from None
    if not location.prefix:
        raise ValueError(
            f"model_asset {uri!r} names a bucket, not a model: add a key, e.g. {uri.rstrip('/')}/models/NAME"
        )
    return uri


@dataclass(frozen=True)
class FinalCheckpoint:
    """The checkpoint a run ended with: its manifest's name and key, and what it holds."""

    name: str
    key: str
    session: int
    bytes: int
    files: int


def read_final_checkpoint(ledger: Any, name: str | None) -> FinalCheckpoint | None:
    """The run's final checkpoint, named by the summary's ``last_manifest`` (None: none was committed).
    One LIST from that name and one GET of the manifest."""
    if not name:
        return None
    stored = next((m for m in ledger.list_manifests(from_name=name) if m.name == name), None)
    if stored is None:
        return None
    manifest: Manifest = ledger.read_manifest(stored)
    return FinalCheckpoint(
        name=stored.name,
        key=stored.key,
        session=manifest.session,
        bytes=manifest.total_bytes,
        files=len(manifest.files),
    )


def model_event_extra(summary: Mapping[str, Any], checkpoint: FinalCheckpoint | None, *, bucket: str) -> dict[str, Any]:
    """The asset event's ``extra``: the final checkpoint and the run's story, from the run summary
    (``run/summary.py``'s ``summarize`` plus ``run_uri`` and ``last_manifest``)."""
    cost, on_demand = summary.get("estimated_cost_usd"), summary.get("on_demand_cost_usd")
    return {
        "format": EVENT_FORMAT,
        "run_uri": summary.get("run_uri"),
        "checkpoint": None
        if checkpoint is None
        else {
            "manifest": checkpoint.name,
            "manifest_uri": f"s3://{bucket}/{checkpoint.key}",
            "session": checkpoint.session,
            "bytes": checkpoint.bytes,
            "files": checkpoint.files,
        },
        "sessions": int(summary.get("sessions") or 0),
        "interruptions": int(summary.get("interruptions") or 0),
        "failures": int(summary.get("failures") or 0),
        "spot_seconds": summary.get("spot_seconds"),
        "on_demand_seconds": summary.get("on_demand_seconds"),
        "estimated_cost_usd": cost,
        "on_demand_cost_usd": on_demand,
        "saved_usd": None if cost is None or on_demand is None else round(float(on_demand) - float(cost), 4),
    }


@dataclass(frozen=True)
class TrainedModel:
    """What a downstream DAG reads from the asset event (``model_from_event(event.extra)``)."""

    run_uri: str
    manifest: str | None
    manifest_uri: str | None
    bytes: int | None
    files: int | None
    sessions: int
    interruptions: int
    estimated_cost_usd: float | None
    on_demand_cost_usd: float | None


def model_from_event(extra: Mapping[str, Any]) -> TrainedModel:
    """The model an asset event announced, for a DAG scheduled on the model asset; an event not written
    by this operator (another task updating the same asset, or a manual event) is refused by name."""
    if not isinstance(extra, Mapping) or extra.get("format") != EVENT_FORMAT or not extra.get("run_uri"):
        raise ValueError(
            f"this asset event was not written by GridRunOperator (its extra has no format {EVENT_FORMAT!r}): "
            f"{dict(extra) if isinstance(extra, Mapping) else extra!r}"
        )
    checkpoint = extra.get("checkpoint") or {}
    return TrainedModel(
        run_uri=str(extra["run_uri"]),
        manifest=checkpoint.get("manifest"),
        manifest_uri=checkpoint.get("manifest_uri"),
        bytes=checkpoint.get("bytes"),
        files=checkpoint.get("files"),
        sessions=int(extra.get("sessions") or 0),
        interruptions=int(extra.get("interruptions") or 0),
        estimated_cost_usd=extra.get("estimated_cost_usd"),
        on_demand_cost_usd=extra.get("on_demand_cost_usd"),
    )


def restore_model(model: TrainedModel, directory: str, *, client: Any = None) -> str:
    """Download the model's final checkpoint (every file of its execution directory, hashes verified) into
    ``directory``; returns the manifest restored. ``client``: a boto3 S3 client (in a task,
    ``S3Hook(aws_conn_id).get_conn()``); None uses boto3's default credential chain. A run's final checkpoint is
    its newest, so anything else restored means the run went on after the event: refused by name."""
    from airflow_grid_resume.agent.restore import Restorer
    from airflow_grid_resume.ledger.s3client import make_s3_client
    from airflow_grid_resume.ledger.store import RunLedger

    ledger = RunLedger(client or make_s3_client(), parse_s3_uri(model.run_uri, what="the event's run_uri"))
    restored = Restorer(ledger, directory).restore().manifest
    name = restored.name if restored is not None else None
    if model.manifest and name != model.manifest:
        raise ValueError(f"{model.run_uri} restored checkpoint {name}, not the event's {model.manifest}")
    return name or ""
