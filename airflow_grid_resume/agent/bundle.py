"""Building the agent as one zipapp, the file a bootstrap downloads onto an instance.

The zipapp carries the libraries the agent needs (boto3, botocore trimmed to the services it calls, and what
they import), so an instance needs nothing but a python3 >= 3.9 (docs/agent.md, "What an image needs"). They
are pinned, pure-Python wheels, checked against their sha256 here: the newest releases that still run on
Python 3.9, the system Python of Amazon Linux 2023 and Debian 11.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipapp
import zipfile
from pathlib import Path

import airflow_grid_resume
from airflow_grid_resume.agent.libs import PREFIX as LIBS_PREFIX

# An image or a deployment that built the zipapp once names it here (docker/Dockerfile does).
PREBUILT_ENV = "GRID_RESUME_AGENT_ZIPAPP"
# Where the pinned wheels are looked for first and downloaded to (pip download) when missing.
WHEELS_ENV = "GRID_RESUME_AGENT_WHEELS"

# The oldest Python the agent supports, and the wheels it carries (all licensed for redistribution: Apache-2.0
# for boto3, botocore, s3transfer; MIT for jmespath, urllib3, six; Apache-2.0 or BSD for python-dateutil).
# botocore 1.42.97 is the last release for Python 3.9 and has everything the agent relies on (S3 conditional
# writes, request_checksum_calculation).
MIN_PYTHON = (3, 9)
WHEELS: dict[str, str] = {
    "boto3-1.42.97-py3-none-any.whl": "966e49f0510af9a64057a902b7df53d4348c447de0d3df4cc855dfd85e058fcd",
    "botocore-1.42.97-py3-none-any.whl": "77d2c8ce1bc592d3fbd7c01c35836f4a5b0cac2ca03ccdf6ffc60faa16b5fadc",
    "s3transfer-0.16.1-py3-none-any.whl": "61bcd00ccb83b21a0fe7e91a553fff9729d46c83b4e0106e7c314a733891f7c2",
    "jmespath-1.1.0-py3-none-any.whl": "a5663118de4908c91729bea0acadca56526eb2698e83de10cd116ae0f4e97c64",
    "python_dateutil-2.9.0.post0-py2.py3-none-any.whl": (
        "a8b2bc7bffae282281c8140a97d3aa9c14da0b136dfe83f850eea9a5f7470427"
    ),
    "six-1.17.0-py2.py3-none-any.whl": "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
    "urllib3-2.6.3-py3-none-any.whl": "bf272323e553dfb2e87d9bfd225ca7b0f467b919d7bbd355436d3fd37cb0acd4",
}
# The AWS services the agent calls (S3: the ledger; SQS: live output; STS: the credential chain's assume-role
# and web-identity providers). botocore's other models (about 28 MB) stay behind.
SERVICES = ("s3", "sqs", "sts")

_MAIN = """\
import sys
if sys.version_info < %(min)r:
    sys.stderr.write("grid-resume agent: needs python3 >= %(min_text)s, %%s is %%s\\n"
                     %% (sys.executable, sys.version.split()[0]))
    sys.exit(78)
import os
from airflow_grid_resume.agent.libs import activate
activate(os.path.dirname(os.path.abspath(__file__)), %(key)r)
from airflow_grid_resume.agent.cli import main
sys.exit(main(prog="grid-resume-agent"))
"""


def wheel_name_to_requirement(name: str) -> str:
    """``boto3-1.42.97-py3-none-any.whl`` -> ``boto3==1.42.97``."""
    dist, version = name.split("-")[:2]
    return f"{dist.replace('_', '-')}=={version}"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheels_dir() -> str:
    return os.environ.get(WHEELS_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "grid-resume", "wheels"
    )


def fetch_wheels(directory: str | None = None) -> dict[str, str]:
    """{wheel name: path} for every pinned wheel, downloaded with pip when missing; each checked by sha256."""
    directory = directory or wheels_dir()
    os.makedirs(directory, exist_ok=True)
    missing = [name for name in WHEELS if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            ".".join(map(str, MIN_PYTHON)),
            "--implementation",
            "py",
            "--abi",
            "none",
            "--platform",
            "any",
            "--dest",
            directory,
            *(wheel_name_to_requirement(name) for name in missing),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"cannot download the agent's libraries ({', '.join(missing)}) with pip: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}\n"
                f"Put these wheels in {directory} (or a folder named by ${WHEELS_ENV}), or build the agent "
                f"where PyPI is reachable (`grid-resume build-agent FILE`) and set ${PREBUILT_ENV}=FILE"
            )
    paths = {}
    for name, expected in WHEELS.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise RuntimeError(f"pip did not leave {name} in {directory}")
        actual = _sha256(path)
        if actual != expected:
            raise RuntimeError(
                f"{path} has sha256 {actual}, not the pinned {expected}: delete it and build again "
                "(a mirror serving other bytes under this name is not trusted)"
            )
        paths[name] = path
    return paths


def keep_member(name: str) -> bool:
    """Which files of the wheels the zipapp carries: code, licenses, and only the service models it calls."""
    parts = name.split("/")
    if "__pycache__" in parts or name.endswith((".pyc", "/RECORD")):
        return False
    if parts[0].endswith(".dist-info"):
        return parts[-1] in ("METADATA", "WHEEL") or parts[-1].startswith(("LICENSE", "NOTICE", "COPYING"))
    if parts[:2] == ["botocore", "data"] and len(parts) > 3:
        return parts[2] in SERVICES and not parts[-1].startswith("examples-")
    return parts[:2] != ["boto3", "data"]  # boto3's resource models: the agent uses clients only


def build_zipapp(target: str, wheels: dict[str, str] | None = None) -> str:
    """Write ``target``: this package's root, its agent and its ledger, and the pinned libraries."""
    package_dir = os.path.dirname(os.path.abspath(airflow_grid_resume.__file__))
    wheels = wheels if wheels is not None else fetch_wheels()
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
        libs = os.path.join(staging, LIBS_PREFIX.rstrip("/"))
        key = hashlib.sha256()
        for name in sorted(wheels):
            with zipfile.ZipFile(wheels[name]) as whl:
                for info in whl.infolist():
                    if info.is_dir() or not keep_member(info.filename):
                        continue
                    out = os.path.join(libs, info.filename)
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    data = whl.read(info)
                    key.update(f"{info.filename}\n{len(data)}\n".encode())
                    key.update(data)
                    with open(out, "wb") as fh:
                        fh.write(data)
        with open(os.path.join(staging, "__main__.py"), "w") as fh:
            fh.write(
                _MAIN % {"min": MIN_PYTHON, "min_text": ".".join(map(str, MIN_PYTHON)), "key": key.hexdigest()[:16]}
            )
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
