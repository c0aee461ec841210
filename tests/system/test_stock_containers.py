"""The agent and the user data as root in containers of stock Debian root file systems, with no pip packages at all:
Debian 11 (python3 3.9, the version Amazon Linux 2023 ships), Debian 12 (3.11), and one without python3.

The images come from debootstrap (scripts/stock-images.sh); ``make docker-test`` builds them and runs this file
with GRID_RESUME_STOCK_IMAGES=1. The local spot cloud starts each instance's user data in a container of the image
(GRID_RESUME_INSTANCE_IMAGE), on the host's network: its S3, SQS and metadata service.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from tests.conftest import heartbeat_of, outcome_of
from tests.system.test_stock_images import SHELL_SAVE, agent_pyz, first_event, launch, wait_until
from tests.triggers.test_spot_cloud import watch_for

pytestmark = pytest.mark.skipif(
    os.environ.get("GRID_RESUME_STOCK_IMAGES") != "1",
    reason="needs the Debian images and a Docker engine: make docker-test builds them and runs this file",
)

DEBIAN = {
    "debian11": ("grid-resume-test/debian11-python3:latest", "3.9."),
    "debian12": ("grid-resume-test/debian12-python3:latest", "3.11."),
}
NO_PYTHON = "grid-resume-test/bookworm-minbase:latest"
__all__ = ["agent_pyz"]  # the zipapp fixture, shared with test_stock_images.py


@pytest.fixture
def image_cloud(monkeypatch: pytest.MonkeyPatch):
    from airflow_grid_resume.emulator.client import LocalSpotCloud

    started: list[LocalSpotCloud] = []

    def start(image: str) -> LocalSpotCloud:
        monkeypatch.setenv("GRID_RESUME_INSTANCE_IMAGE", image)
        monkeypatch.delenv("GRID_RESUME_PYTHONS", raising=False)
        cloud = LocalSpotCloud(notice_seconds=5).start()
        started.append(cloud)
        for key, value in cloud.aws_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        return cloud

    yield start
    for cloud in started:
        cloud.stop()


def console(cloud, instance_id: str) -> str:
    return (Path(cloud.instance(instance_id)["directory"]) / "console.log").read_text(errors="replace")


@pytest.mark.parametrize("name", sorted(DEBIAN))
def test_a_run_completes_on_a_stock_debian_image(image_cloud, agent_pyz: str, name: str) -> None:
    """Session 1: restore (nothing yet), run, live output, a spot notice, SIGTERM, final sync, outcome. Session 2 on a
    new instance restores the checkpoint and the run completes."""
    image, version = DEBIAN[name]
    cloud = image_cloud(image)
    run_uri, instance_id = launch(cloud, agent_pyz, SHELL_SAVE)
    ledger = RunLedger(make_s3_client(), parse_s3_uri(run_uri))
    wait_until(lambda: (heartbeat_of(ledger, 1) or {}).get("state") == "running", what="the agent running")
    boot = ledger.read_record(records.Boot, 1)
    assert boot is not None and boot.python_version.startswith(version), boot
    assert f"starting the agent with {boot.python}" in console(cloud, instance_id)
    assert b"started" in wait_until(lambda: ledger.read_log(1, 0)[0], what="output in the ledger")
    cloud.interrupt(instance_id, notice=True)
    wait_until(lambda: cloud.instance(instance_id)["state"] == "terminated", what="the instance terminated")
    outcome = outcome_of(ledger, 1)
    assert outcome["status"] == "interrupted" and outcome["notice"]["source"] == "imds", outcome
    assert [f.path for f in ledger.read_manifest(ledger.list_manifests()[0]).files] == ["ckpt"]

    _, second = launch(cloud, agent_pyz, ["cat", "ckpt"], run_uri=run_uri, session=2)
    wait_until(lambda: outcome_of(ledger, 2), what="session 2's outcome", timeout=120)
    assert outcome_of(ledger, 2)["status"] == "succeeded"
    assert b"step-7" in ledger.read_log(2, 0)[0]  # restored from session 1's checkpoint
    wait_until(lambda: cloud.instance(second)["state"] == "terminated", what="the instance powering off")


def test_an_image_without_python3_says_so(image_cloud, agent_pyz: str) -> None:
    """Debian's minimal root file system has no python3: the console says what the image lacks, and the run trigger,
    reading it there (no python3 can write boot.json), fails the session as the image's problem, not the script's."""
    cloud = image_cloud(NO_PYTHON)
    run_uri, instance_id = launch(cloud, agent_pyz, ["true"])
    watch = watch_for(run_uri, instance_id, boot_timeout=120)
    event = first_event(watch)
    assert event["status"] == "failed" and event["outcome"]["cause"] == records.CAUSE_IMAGE, event
    assert event["reason"].startswith("grid-resume: no usable Python on this image"), event
    assert "found: none" in event["reason"]
    text = console(cloud, instance_id)
    assert "no usable Python on this image" in text and "found: none" in text, text
