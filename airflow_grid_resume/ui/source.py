"""Where the UI's data comes from, on the api-server: Airflow's metadata database (which task
instances run ``GridRunOperator``, their tries, where their run's ledger is) and the ledgers
themselves, read through each task's own AWS connection. Nothing here reaches the browser but the
view model ``ui/model.py`` makes of it: no credentials, no connection details.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import ClientError

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.s3client import is_not_found
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri

OPERATOR = "GridRunOperator"
RUN_XCOM = "_grid_resume_run"  # pushed by the operator: {"run_uri", "aws_conn_id", "region_name"}
SESSION_FILES: dict[str, type[records.Record]] = {
    "start": records.SessionStart,
    "launch": records.Launch,
    "heartbeat": records.Heartbeat,
    "outcome": records.Outcome,
    "closed": records.Closed,
}


def read_ledger_docs(ledger: RunLedger, *, max_manifests: int = 10) -> dict[str, Any]:
    """A run's ledger documents as ``ui/model.py`` takes them (each typed record's JSON form): spec,
    final, every session's records and the newest ``max_manifests`` checkpoints with their size (one
    GET each). A document in a newer format than this code knows makes the run unreadable here."""
    deadline = records.as_dict(ledger.read_record(records.Deadline))  # a deadline= run (one GET for any run)
    sessions = []
    for number in ledger.list_sessions():
        record: dict[str, Any] = {"session": number}
        for name, cls in SESSION_FILES.items():
            record[name] = records.as_dict(ledger.read_record(cls, number))
        if deadline is not None:  # the policy's latest decision about the session
            record["decision"] = records.as_dict(ledger.read_record(records.Decision, number))
        sessions.append(record)
    if sessions:  # the newest session's launch-attempt record: what a capacity wait tried, and when it tries next
        key = ledger.key(layout.launch_attempt(sessions[-1]["session"]))
        doc, age = read_with_age(ledger, key)
        sessions[-1]["attempt"] = None if doc is None else records.LaunchAttempt.from_dict(doc, name=key).to_dict()
        sessions[-1]["attempt_seen"] = None if doc is None else {"age": age, "read_at": time.time()}
    manifests = []
    for index, stored in enumerate(ledger.list_manifests()):
        entry: dict[str, Any] = {
            "name": stored.name,
            "session": stored.session,
            "seq": stored.seq,
            "committed_at": stored.committed_at,
        }
        if index < max_manifests:
            try:
                manifest = ledger.read_manifest(stored)
                entry["files"] = len(manifest.files)
                entry["bytes"] = manifest.total_bytes
            except Exception:  # a broken manifest is shown without its size; restore skips it anyway
                entry["files"] = entry["bytes"] = None
        manifests.append(entry)
    return {
        "run_uri": str(ledger.location),
        "spec": records.as_dict(ledger.read_spec()),
        "final": records.as_dict(ledger.read_final()),
        "deadline": deadline,
        "sessions": sessions,
        "manifests": manifests,
    }


def read_with_age(ledger: RunLedger, key: str) -> tuple[dict | None, float | None]:
    """A JSON object and its age in seconds by S3's own clock (the response's Date minus the object's
    Last-Modified, so neither the writer's nor this server's clock skew counts; None if either header
    is missing). (None, None) when the object does not exist or is no JSON object."""
    try:
        response = ledger.client.get_object(Bucket=ledger.location.bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None, None
        raise
    try:
        doc = json.loads(response["Body"].read())
    except ValueError:
        return None, None
    age = None
    served = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    modified = response.get("LastModified")
    if served and modified is not None:
        with contextlib.suppress(TypeError, ValueError):
            age = max(0.0, (parsedate_to_datetime(served) - modified).total_seconds())
    return (doc, age) if isinstance(doc, dict) else (None, None)


def open_ledger(pointer: dict[str, Any]) -> RunLedger:
    """The run's ledger, read through the task's own AWS connection (``aws_conn_id``, region)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_grid_resume.quiet import quiet_credential_logs

    quiet_credential_logs()
    hook = S3Hook(aws_conn_id=pointer.get("aws_conn_id"), region_name=pointer.get("region_name"))
    return RunLedger(hook.get_conn(), parse_s3_uri(str(pointer["run_uri"]), what="run_uri"))


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def task_instances(
    session: Any, *, dag_ids: Iterable[str] | None = None, since: datetime | None = None, limit: int = 200
) -> list[Any]:
    """Task instances of ``GridRunOperator``, newest first (``dag_ids`` None: all)."""
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import or_, select

    query = select(TI).where(or_(TI.operator == OPERATOR, TI.custom_operator_name == OPERATOR))
    if dag_ids is not None:
        query = query.where(TI.dag_id.in_(list(dag_ids)))
    if since is not None:
        query = query.where(or_(TI.start_date >= since, TI.end_date.is_(None)))
    return list(session.scalars(query.order_by(TI.start_date.desc()).limit(limit)))


def task_instance(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    return session.scalar(
        select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id, TI.map_index == map_index)
    )


def tries(session: Any, ti: Any) -> list[dict[str, Any]]:
    """Every try of the task instance: the finished ones from its history, then the current one."""
    from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH
    from sqlalchemy import select

    rows = session.scalars(
        select(TIH).where(
            TIH.dag_id == ti.dag_id, TIH.run_id == ti.run_id, TIH.task_id == ti.task_id, TIH.map_index == ti.map_index
        )
    )
    out = {
        int(h.try_number): {
            "try_number": int(h.try_number),
            "state": h.state,
            "start_date": _epoch(h.start_date),
            "end_date": _epoch(h.end_date),
        }
        for h in rows
    }
    if ti.try_number:
        out[int(ti.try_number)] = {
            "try_number": int(ti.try_number),
            "state": ti.state,
            "start_date": _epoch(ti.start_date),
            "end_date": _epoch(ti.end_date),
        }
    return [out[k] for k in sorted(out)]


def xcom(session: Any, ti: Any, key: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    value = session.scalar(
        select(XComModel.value).where(
            XComModel.dag_id == ti.dag_id,
            XComModel.run_id == ti.run_id,
            XComModel.task_id == ti.task_id,
            XComModel.map_index == ti.map_index,
            XComModel.key == key,
        )
    )
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def run_pointer(session: Any, ti: Any) -> dict[str, Any] | None:
    """Where the task instance's run ledger is and which connection reads it (the operator's XCom)."""
    value = xcom(session, ti, RUN_XCOM)
    return value if value and value.get("run_uri") else None


def link_conf(session: Any, ti: Any) -> dict[str, Any]:
    """What the instance links need (console domain and region, or the endpoint's own console):
    the operator's instance-link XCom, without its instance id."""
    from airflow_grid_resume.links import LINK_CONF, GridInstanceLink

    value = xcom(session, ti, GridInstanceLink.key) or {}
    return {k: value[k] for k in LINK_CONF if k in value}


def waiting_for(session: Any, ti: Any) -> dict[str, Any] | None:
    """What the task's capacity trigger waits for (types, since when, how long at most), if it waits."""
    from airflow.models.trigger import Trigger

    if ti.state != "deferred" or ti.trigger_id is None:
        return None
    trigger = session.get(Trigger, ti.trigger_id)
    if trigger is None or not str(trigger.classpath).endswith("SpotCapacityTrigger"):
        return None
    kwargs = trigger.kwargs
    return {
        "instance_types": list((kwargs.get("spec") or {}).get("instance_types") or []),
        "started_at": kwargs.get("started_at"),
        "max_wait": kwargs.get("max_wait"),
        "session": kwargs.get("session"),
    }


def retry_at(session: Any, ti: Any) -> float | None:
    """When Airflow retries a task instance that is up for retry (epoch seconds), as the scheduler
    computes it (``TaskInstance.next_retry_datetime``: a retry policy's delay, else the task's
    ``retry_delay`` and backoff, from the DAG version the try ran), or None if it cannot be known here."""
    if ti.state != "up_for_retry" or ti.end_date is None:
        return None
    try:
        if ti.retry_delay_override is None:  # the task's own retry_delay: from its serialized DAG
            from airflow.models.dagbag import DBDagBag

            dag = DBDagBag(load_op_links=False).get_dag(ti.dag_version_id, session) if ti.dag_version_id else None
            if dag is None or not dag.has_task(ti.task_id):
                return None
            ti.task = dag.get_task(ti.task_id)
        return float(ti.next_retry_datetime().timestamp())
    except Exception:  # only the run view's countdown misses it
        return None


def read_many(pointers: list[dict[str, Any]], *, max_manifests: int = 0, workers: int = 8) -> list[dict | None]:
    """Ledger documents of many runs at once (the dashboard); a run that cannot be read gives None."""

    def one(pointer: dict[str, Any]) -> dict | None:
        try:
            return read_ledger_docs(open_ledger(pointer), max_manifests=max_manifests)
        except Exception:
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, pointers))


def read_fleet_records(pointers: list[dict[str, Any]]) -> list[dict | None]:
    """The fleet record of every deployment the runs name (``fleet_uri`` in their pointers), each read once."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_grid_resume.spot import fleetstore

    seen: dict[str, dict[str, Any]] = {}
    for pointer in pointers:
        if pointer.get("fleet_uri"):
            seen.setdefault(str(pointer["fleet_uri"]), pointer)
    found: list[dict | None] = []
    for uri, pointer in seen.items():
        try:
            client = S3Hook(aws_conn_id=pointer.get("aws_conn_id"), region_name=pointer.get("region_name")).get_conn()
            found.append(fleetstore.read(client, uri)[0])
        except Exception:  # a dashboard shows what it can read
            found.append(None)
    return found
