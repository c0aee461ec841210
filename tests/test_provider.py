"""get_provider_info.py: Airflow discovers the provider and its links."""

from __future__ import annotations


def test_airflow_discovers_the_provider_and_its_links() -> None:
    import subprocess
    import sys

    code = (
        "from airflow.providers_manager import ProvidersManager as P\n"
        "p = P()\n"
        "info = p.providers['airflow-grid-resume']\n"
        "print(info.version)\n"
        "print(sorted(c for c in p.extra_links_class_names if 'grid_resume' in c))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "0.1.0" in out
    assert "airflow_grid_resume.links.GridArtifactsLink" in out and "airflow_grid_resume.links.GridInstanceLink" in out
