"""The plugin as Airflow finds it: the entry point, its views and app, and that the app refuses
requests without the api-server's authentication (no server needed: FastAPI's test client)."""

from __future__ import annotations

from importlib.metadata import entry_points

from fastapi.testclient import TestClient


def test_the_entry_point_gives_the_plugin_with_its_views_and_app() -> None:
    from airflow_grid_resume.ui.plugin import GridResumePlugin

    found = [e for e in entry_points(group="airflow.plugins") if e.name == "grid_resume"]
    assert found and found[0].load() is GridResumePlugin
    views = {v["destination"]: v for v in GridResumePlugin.external_views}
    assert views["task_instance"]["href"] == (
        "/grid-resume/run?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"
    )
    assert views["nav"]["href"] == "/grid-resume/"
    assert [a["url_prefix"] for a in GridResumePlugin.fastapi_apps] == ["/grid-resume"]


def test_the_plugin_link_replaces_the_operators_own_for_every_try() -> None:
    """Airflow's deserializer swaps the operator's XCom link for a plugin link of the same name
    registered for the operator's class and module (serialized_objects.py); check what it matches on."""
    from airflow_grid_resume.links import GridInstanceLink
    from airflow_grid_resume.operators import GridRunOperator
    from airflow_grid_resume.ui.plugin import GridResumePlugin

    (link,) = GridResumePlugin.operator_extra_links
    assert link.name == GridInstanceLink.name and link.operators == [GridRunOperator]
    assert GridInstanceLink.name in [type(x).name for x in GridRunOperator.operator_extra_links]


def test_every_route_needs_authentication() -> None:
    from airflow_grid_resume.ui.plugin import GridResumePlugin

    client = TestClient(GridResumePlugin.fastapi_apps[0]["app"])
    for path in ("/", "/run?dag_id=d&run_id=r&task_id=t", "/run.json?dag_id=d&run_id=r&task_id=t"):
        response = client.get(path)
        assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}, path
