"""Extra links: the console in the connection's partition and region, or the local spot cloud's
pages (no server needed for the formatting)."""

from __future__ import annotations

from airflow_grid_resume.links import GridArtifactsLink, GridInstanceLink


def test_console_links_use_the_partition_and_region() -> None:
    link = GridInstanceLink()
    url = link.format_link(aws_domain=link.get_aws_domain("aws-cn"), region_name="cn-north-1", instance_id="i-1")
    assert url == "https://console.amazonaws.cn/ec2/home?region=cn-north-1#InstanceDetails:instanceId=i-1"
    art = GridArtifactsLink()
    url = art.format_link(
        aws_domain=art.get_aws_domain("aws-us-gov"), region_name="us-gov-west-1", bucket="b", prefix="runs/x"
    )
    assert url == "https://console.amazonaws-us-gov.com/s3/buckets/b?region=us-gov-west-1&prefix=runs/x/"


def test_local_spot_cloud_links_open_its_pages() -> None:
    local = "http://127.0.0.1:5000"
    assert GridInstanceLink().format_link(local_cloud=local, instance_id="i-9") == (
        local + "/_emulator/pages/instances/i-9"
    )
    assert GridArtifactsLink().format_link(local_cloud=local, bucket="b", prefix="runs/x") == (
        local + "/_emulator/pages/ledger?bucket=b&prefix=runs%2Fx%2F"
    )
