"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-grid-resume",
        "name": "Grid Resume",
        "description": "Resumable ML training on EC2 spot capacity: restore, run, survive interruptions, resume.",
        "versions": ["0.1.0"],
    }
