"""Building the agent as one zipapp, the file a bootstrap downloads onto an instance."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipapp

import airflow_grid_resume

_MAIN = "import sys\nfrom airflow_grid_resume.agent.cli import main\nsys.exit(main(prog='grid-resume-agent'))\n"


def build_zipapp(target: str) -> str:
    """Write ``target`` (a .pyz holding only this package's root and agent modules)."""
    package_dir = os.path.dirname(os.path.abspath(airflow_grid_resume.__file__))
    with tempfile.TemporaryDirectory(prefix="grid-resume-zipapp-") as staging:
        dest = os.path.join(staging, "airflow_grid_resume")
        os.makedirs(os.path.join(dest, "agent"))
        shutil.copy2(os.path.join(package_dir, "__init__.py"), dest)
        for name in sorted(os.listdir(os.path.join(package_dir, "agent"))):
            if name.endswith(".py"):
                shutil.copy2(os.path.join(package_dir, "agent", name), os.path.join(dest, "agent", name))
        with open(os.path.join(staging, "__main__.py"), "w") as fh:
            fh.write(_MAIN)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        zipapp.create_archive(staging, target, interpreter="/usr/bin/env python3", compressed=True)
    return target
