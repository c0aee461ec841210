"""Building the agent as one zipapp, the file a bootstrap downloads onto an instance."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipapp
from pathlib import Path

import airflow_grid_resume

# An image or a deployment that built the zipapp once names it here (docker/Dockerfile does).
PREBUILT_ENV = "GRID_RESUME_AGENT_ZIPAPP"
_MAIN = "import sys\nfrom airflow_grid_resume.agent.cli import main\nsys.exit(main(prog='grid-resume-agent'))\n"


def build_zipapp(target: str) -> str:
    """Write ``target`` (a .pyz holding only this package's root, its agent and its ledger)."""
    package_dir = os.path.dirname(os.path.abspath(airflow_grid_resume.__file__))
    with tempfile.TemporaryDirectory(prefix="grid-resume-zipapp-") as staging:
        dest = os.path.join(staging, "airflow_grid_resume")
        os.makedirs(dest)
        shutil.copy2(os.path.join(package_dir, "__init__.py"), dest)
        for folder in ("agent", "ledger"):  # with their subpackages (agent/monitors)
            source = os.path.join(package_dir, folder)
            for root, dirs, files in os.walk(source):
                dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(root, d, "__init__.py")))
                target_dir = os.path.join(dest, folder, os.path.relpath(root, source))
                os.makedirs(target_dir, exist_ok=True)
                for name in sorted(files):
                    if name.endswith(".py"):
                        shutil.copy2(os.path.join(root, name), os.path.join(target_dir, name))
        with open(os.path.join(staging, "__main__.py"), "w") as fh:
            fh.write(_MAIN)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        zipapp.create_archive(staging, target, interpreter="/usr/bin/env python3", compressed=True)
    return target


def agent_zipapp() -> bytes:
    """The zipapp an instance downloads: the prebuilt file named by ``$GRID_RESUME_AGENT_ZIPAPP`` when set (built
    with the installed package, so it matches it), else one built now."""
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        try:
            with open(prebuilt, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise FileNotFoundError(
                f"{PREBUILT_ENV}={prebuilt!r} cannot be read ({exc.strerror}): "
                f"run `grid-resume build-agent {prebuilt}` or unset {PREBUILT_ENV}"
            ) from exc
    with tempfile.TemporaryDirectory(prefix="grid-resume-zipapp-") as tmp:
        return Path(build_zipapp(os.path.join(tmp, "agent.pyz"))).read_bytes()
