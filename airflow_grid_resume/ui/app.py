"""The plugin's FastAPI app, mounted by the api-server: the run view of one task instance and the
fleet dashboard, as server-rendered HTML (and the run view as JSON).

Every route is protected by the api-server's own auth (the JWT in the ``Authorization`` header or
the UI's session cookie): the run view needs read access to the DAG's task instances, and the
dashboard lists only the DAGs the user may read. The ledgers are read here, on the server.
"""

import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_grid_resume.ui.routes import RUN_VIEW_ROUTE, base_path


def _map_index(value: str | None) -> int:
    """The UI fills ``{MAP_INDEX}`` only for mapped tasks: anything not a number is -1."""
    try:
        return int(value) if value not in (None, "") else -1
    except ValueError:
        return -1


def _run_view(dag_id: str, run_id: str, task_id: str, map_index: int) -> tuple[dict[str, Any] | None, str]:
    """The run view model, or None and the reason there is none."""
    from airflow.utils.session import create_session

    from airflow_grid_resume.ui import model, source

    now = time.time()
    with create_session() as session:
        ti = source.task_instance(session, dag_id, run_id, task_id, map_index)
        if ti is None:
            return None, f"no task instance {dag_id}.{task_id} in {run_id}"
        if source.OPERATOR not in (ti.operator, ti.custom_operator_name):
            return None, f"{task_id} is a {ti.operator}: this view shows GridRunOperator tasks"
        pointer = source.run_pointer(session, ti)
        tries = source.tries(session, ti)
        waiting = source.waiting_for(session, ti)
        retry_at = source.retry_at(session, ti)
        links = source.link_conf(session, ti)
        ti_state = ti.state
    if pointer is None:
        return None, "the task has not created its run yet"
    docs = source.read_ledger_docs(source.open_ledger(pointer))
    view = model.run_view(docs, tries, now=now, ti_state=ti_state, waiting=waiting, retry_at=retry_at)
    return model.with_instance_links(view, links), ""


def create_app() -> FastAPI:
    """Built when the plugin is imported; nothing here touches the database or AWS until a request."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    # (no ``from __future__ import annotations`` in this module: FastAPI must see the Annotated
    # dependencies of these nested functions as objects, not as strings it cannot resolve)
    app = FastAPI(title="Grid Resume", description="Spot training runs of airflow-grid-resume")
    read_ti = [Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))]

    @app.get("/run", response_class=HTMLResponse, dependencies=read_ti)
    def run_page(dag_id: str, run_id: str, task_id: str, map_index: str | None = Query(default=None)) -> HTMLResponse:
        from airflow_grid_resume.ui import render

        view, why = _run_view(dag_id, run_id, task_id, _map_index(map_index))
        title = f"{dag_id}.{task_id} · {run_id}"
        if view is None:
            return HTMLResponse(render.message_page(title, why))
        return HTMLResponse(render.run_page(view, title=title, now=time.time()))

    @app.get("/run.json", dependencies=read_ti)
    def run_json(dag_id: str, run_id: str, task_id: str, map_index: str | None = Query(default=None)) -> JSONResponse:
        view, why = _run_view(dag_id, run_id, task_id, _map_index(map_index))
        return JSONResponse(view if view is not None else {"error": why}, status_code=200 if view else 404)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(requires_access_dag("GET"))])
    def fleet_page(
        user: Annotated[Any, Depends(get_user)], days: Annotated[float, Query(gt=0, le=366)] = 7.0
    ) -> HTMLResponse:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.utils.session import create_session

        from airflow_grid_resume.ui import dashboard, model, render, source

        now = time.time()
        since = datetime.now(timezone.utc) - timedelta(days=days)
        allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
        runs = []
        with create_session() as session:
            for ti in source.task_instances(session, dag_ids=allowed, since=since):
                pointer = source.run_pointer(session, ti)
                if pointer is None:
                    continue
                runs.append(
                    {
                        "dag_id": ti.dag_id,
                        "task_id": ti.task_id,
                        "run_id": ti.run_id,
                        "map_index": ti.map_index,
                        "ti_state": ti.state,
                        "pointer": pointer,
                        "tries": source.tries(session, ti),
                        "waiting": source.waiting_for(session, ti),
                        "retry_at": source.retry_at(session, ti),
                    }
                )
        docs = source.read_many([r["pointer"] for r in runs])
        shown = []
        for run, doc in zip(runs, docs, strict=True):
            if doc is None:
                continue
            view = model.run_view(
                doc, run["tries"], now=now, ti_state=run["ti_state"], waiting=run["waiting"], retry_at=run["retry_at"]
            )
            shown.append(
                {
                    **{k: run[k] for k in ("dag_id", "task_id", "run_id", "map_index", "ti_state")},
                    "view": view,
                    "deadline": dashboard.run_deadline(doc),
                }
            )
        board = model.fleet(shown, now=now, since=since.timestamp())
        board["pools"] = model.pools(source.read_fleet_records([r["pointer"] for r in runs]))
        pictures = dashboard.pictures(shown, now=now, since=since.timestamp())
        return HTMLResponse(render.fleet_page(board, days=days, run_link=airflow_run_link, pictures=pictures))

    return app


def airflow_run_link(row: dict[str, Any]) -> str:
    """The run view inside Airflow's own task instance page."""

    mapped = f"/mapped/{row['map_index']}" if (row.get("map_index") or -1) >= 0 else ""
    return (
        f"{base_path()}/dags/{quote(row['dag_id'], safe='')}/runs/{quote(row['run_id'], safe='')}"
        f"/tasks/{quote(row['task_id'], safe='')}{mapped}/plugin/{RUN_VIEW_ROUTE}"
    )
