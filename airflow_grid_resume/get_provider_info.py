"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-grid-resume",
        "name": "Grid Resume",
        "description": "Resumable ML training on EC2 spot capacity: restore, run, survive interruptions, resume.",
        "versions": ["0.1.0"],
        "integrations": [{"integration-name": "Grid Resume", "external-doc-url": "https://aws.amazon.com/ec2/spot/"}],
        "operators": [{"integration-name": "Grid Resume", "python-modules": ["airflow_grid_resume.operators"]}],
        "hooks": [{"integration-name": "Grid Resume", "python-modules": ["airflow_grid_resume.hooks.spot"]}],
        "triggers": [
            {
                "integration-name": "Grid Resume",
                "python-modules": ["airflow_grid_resume.triggers.capacity", "airflow_grid_resume.triggers.run"],
            }
        ],
        "extra-links": ["airflow_grid_resume.links.GridInstanceLink", "airflow_grid_resume.links.GridArtifactsLink"],
    }
