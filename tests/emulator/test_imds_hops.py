"""The metadata emulator's hop limit, through real network namespaces: the token's response leaves with the IP TTL
set to the hop limit, so a process one router further away (a container's namespace behind the instance's) gets
it only with a hop limit of 2, as on EC2. Needs root and iproute2 (skipped otherwise)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from airflow_grid_resume.emulator.imds import MetadataService

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("curl"), reason="needs root, iproute2 and curl"
)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def network() -> Iterator[dict]:
    """The host (where the metadata service listens), an instance namespace routed to it, and a container
    namespace one router (the instance) further: host 10.213.N.1 - 10.213.N.2 instance 10.214.N.1 - 10.214.N.2."""
    n = random.randint(1, 250)
    tag = f"{os.getpid() % 10000}{n}"
    inst, ctr, host_if = f"gri{tag}", f"grc{tag}", f"grh{tag}"
    host, inst_ip, gw, ctr_ip = f"10.213.{n}.1", f"10.213.{n}.2", f"10.214.{n}.1", f"10.214.{n}.2"
    try:
        sh("ip", "netns", "add", inst)
        sh("ip", "netns", "add", ctr)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", f"gri{tag}x", "netns", inst)
        sh("ip", "addr", "add", f"{host}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", inst, "addr", "add", f"{inst_ip}/24", "dev", f"gri{tag}x")
        sh("ip", "-n", inst, "link", "set", f"gri{tag}x", "up")
        sh("ip", "-n", inst, "link", "add", f"grc{tag}y", "type", "veth", "peer", "name", f"grc{tag}x", "netns", ctr)
        sh("ip", "-n", inst, "addr", "add", f"{gw}/24", "dev", f"grc{tag}y")
        sh("ip", "-n", inst, "link", "set", f"grc{tag}y", "up")
        sh("ip", "-n", ctr, "addr", "add", f"{ctr_ip}/24", "dev", f"grc{tag}x")
        sh("ip", "-n", ctr, "link", "set", f"grc{tag}x", "up")
        sh("ip", "-n", ctr, "route", "add", "default", "via", gw)
        sh("ip", "netns", "exec", inst, "sysctl", "-qw", "net.ipv4.ip_forward=1")  # the instance routes for it
        sh("ip", "route", "add", f"10.214.{n}.0/24", "via", inst_ip)
        yield {"host": host, "instance": inst, "container": ctr}
    finally:
        subprocess.run(["ip", "route", "del", f"10.214.{n}.0/24"], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        for ns in (ctr, inst):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def token_from(namespace: str, url: str) -> str | None:
    """An IMDSv2 token as a process in ``namespace`` asks for it (curl, 3 s), None when no answer came."""
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, "curl", "-s", "-m", "3", "-X", "PUT",
         "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", f"{url}/latest/api/token"],
        capture_output=True, text=True,
    )  # fmt: skip
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


def notice_from(namespace: str, url: str, token: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, "curl", "-s", "-m", "3", "-H", f"X-aws-ec2-metadata-token: {token}",
         f"{url}/latest/meta-data/spot/instance-action"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def test_a_container_one_hop_away_gets_the_notice_only_with_a_hop_limit_of_2(network: dict) -> None:
    with MetadataService(host=network["host"], hop_limit=2) as imds:
        imds.schedule_notice(in_seconds=120)
        token = token_from(network["container"], imds.url)
        assert token, "no token in the container with hop limit 2"
        assert '"action": "terminate"' in notice_from(network["container"], imds.url, token)
    with MetadataService(host=network["host"], hop_limit=1) as imds:
        assert token_from(network["instance"], imds.url)  # the instance's own processes: no router between
        assert token_from(network["container"], imds.url) is None  # the response dies at the instance's router
        assert imds.state()["tokens"] == 2  # the container's PUT was answered; the answer never arrived
