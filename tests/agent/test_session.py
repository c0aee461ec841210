"""agent/session.py: what the command's environment says of the session. Pure: no server."""

from __future__ import annotations


def test_resumed_means_an_earlier_sessions_checkpoint_not_the_workdir_snapshot() -> None:
    from airflow_grid_resume.agent.session import command_env

    def resumed(manifest: str | None) -> str:
        env = command_env({}, session=2, run_uri="s3://b/r", workdir="/w", manifest=manifest, instance_id=None)
        return env["GRID_RESUME_RESUMED"]

    assert resumed(None) == "0"
    assert resumed("000000-000001.json") == "0"  # only the code snapshot: a fresh start
    assert resumed("000001-000003.json") == "1"
