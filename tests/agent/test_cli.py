"""agent/cli.py: the agent's options. Pure: no server."""

from __future__ import annotations


def test_agent_keep_manifests_option() -> None:
    """``--keep-manifests N`` reaches the Syncer's per-session bound through AgentOptions; 0 keeps all,
    a negative or fractional number is a usage error (exit 2) saying what is wrong."""
    import argparse

    from airflow_grid_resume.agent import cli
    from airflow_grid_resume.agent.sync import MANIFESTS_PER_SESSION

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    base = ["--run-uri", "s3://b/r", "--workdir", "/tmp/w"]
    assert cli.options_from(parser.parse_args([*base, "--", "true"])).keep_manifests == MANIFESTS_PER_SESSION
    assert cli.options_from(parser.parse_args([*base, "--keep-manifests", "0", "--", "true"])).keep_manifests == 0
    assert cli.options_from(parser.parse_args([*base, "--keep-manifests", "5", "--", "true"])).keep_manifests == 5
    assert cli.main([*base, "--keep-manifests", "-1", "--", "true"]) == 2
    assert cli.main([*base, "--keep-manifests", "2.5", "--", "true"]) == 2
