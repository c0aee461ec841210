"""Extra links: the console in the connection's partition and region, or the local spot cloud's
pages (no server needed for the formatting)."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_grid_resume.links import CONSOLE_URL_ENV, GridArtifactsLink, GridInstanceLink, instance_url, link_target


def test_console_links_use_the_partition_and_region() -> None:
    link = GridInstanceLink()
    url = link.format_link(aws_domain=link.get_aws_domain("aws-cn"), region_name="cn-north-1", instance_id="i-1")
    assert url == "https://console.amazonaws.cn/ec2/home?region=cn-north-1#InstanceDetails:instanceId=i-1"
    art = GridArtifactsLink()
    url = art.format_link(
        aws_domain=art.get_aws_domain("aws-us-gov"), region_name="us-gov-west-1", bucket="b", prefix="runs/x"
    )
    assert url == "https://console.amazonaws-us-gov.com/s3/buckets/b?region=us-gov-west-1&prefix=runs/x/"


def test_an_endpoints_own_console_opens_its_pages() -> None:
    console = "http://127.0.0.1:5000/_emulator/pages"
    assert GridInstanceLink().format_link(console_url=console, instance_id="i-9") == console + "/instances/i-9"
    assert GridArtifactsLink().format_link(console_url=console, bucket="b", prefix="runs/x") == (
        console + "/ledger?bucket=b&prefix=runs%2Fx%2F"
    )


class _Hook:
    def __init__(self, extra: dict) -> None:
        self.conn_config = SimpleNamespace(endpoint_url="http://127.0.0.1:1", extra_config=extra)
        self.conn_region_name = "eu-west-1"
        self.conn_partition = "aws"


def test_a_custom_endpoint_alone_keeps_the_aws_console(monkeypatch) -> None:
    """Nothing is asked of the endpoint (it used to be probed for the local spot cloud, 2 s per task)."""
    monkeypatch.delenv(CONSOLE_URL_ENV, raising=False)
    assert link_target(_Hook({}))["console_url"] is None
    assert link_target(_Hook({"console_url": "http://c/pages/"}))["console_url"] == "http://c/pages"
    monkeypatch.setenv(CONSOLE_URL_ENV, "http://env/pages")
    assert link_target(_Hook({}))["console_url"] == "http://env/pages"
    assert instance_url({"console_url": "http://env/pages"}, None) is None


def test_the_local_spot_cloud_names_its_pages_as_the_console() -> None:
    from airflow_grid_resume.emulator.client import LocalSpotCloud
    from airflow_grid_resume.emulator.pages import CONSOLE_PATH

    cloud = LocalSpotCloud.__new__(LocalSpotCloud)
    cloud.info = {"endpoint_url": "http://127.0.0.1:5000"}
    assert cloud.aws_env()[CONSOLE_URL_ENV] == "http://127.0.0.1:5000" + CONSOLE_PATH
