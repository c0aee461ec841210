"""The Airflow plugin the provider registers (``get_provider_info()["plugins"]``): the FastAPI app
of ``ui/app.py`` on the api-server, a "Spot run" tab on every task instance and a "Spot training"
page in the navigation (Airflow 3.1+ ``external_views``), and the per-try "Spot instance" link."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_grid_resume.ui.app import create_app
from airflow_grid_resume.ui.routes import FLEET_ROUTE, RUN_VIEW_ROUTE, URL_PREFIX, base_path


def operator_links() -> list:
    """The per-try "Spot instance" link, for ``GridRunOperator`` (see ``ui/trylink.py``)."""
    from airflow_grid_resume.operators import GridRunOperator
    from airflow_grid_resume.ui.trylink import TryInstanceLink

    TryInstanceLink.operators = [GridRunOperator]
    return [TryInstanceLink()]


class GridResumePlugin(AirflowPlugin):
    name = "grid_resume"
    operator_extra_links = operator_links()
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Grid Resume"}]
    external_views = [
        {
            "name": "Spot run",
            "href": base_path()
            + URL_PREFIX
            + "/run?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": RUN_VIEW_ROUTE,
        },
        {
            "name": "Spot training",
            "href": base_path() + URL_PREFIX + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": FLEET_ROUTE,
        },
    ]
