"""Extra links on the task: the current session's instance and the run's artifacts, persisted to
XCom before each deferral so they show while the task waits.

On AWS they open the console in the connection's partition and region. On the local spot cloud
(an endpoint that answers ``/_emulator/state``) they open the pages it serves instead
(``emulator/pages.py``): the AWS console cannot show emulated resources.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

from airflow_grid_resume.emulator.pages import instance_page_path, ledger_page_path


def link_target(hook: Any) -> dict[str, Any]:
    """Where links point for this connection: its region and partition, and the local spot cloud's
    address when the connection's endpoint is one (asked once, 2 s at most)."""
    endpoint = (
        getattr(hook.conn_config, "endpoint_url", None)
        or os.environ.get("AWS_ENDPOINT_URL_EC2")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = hook.conn_region_name or "us-east-1"
    try:
        partition = hook.conn_partition
    except Exception:  # a region botocore does not know: the commercial partition
        partition = "aws"
    return {"region_name": region, "aws_partition": partition, "local_cloud": _local_cloud(endpoint)}


def _local_cloud(endpoint: str | None) -> str | None:
    if not endpoint or not endpoint.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/_emulator/state", timeout=2) as resp:
            return endpoint.rstrip("/") if resp.status == 200 else None
    except (OSError, ValueError):
        return None


class GridInstanceLink(BaseAwsLink):
    """The instance of the task's current (or last) try, persisted to XCom before each deferral.

    XComs belong to the task instance, not to a try, so on the api-server the plugin's
    ``ui.links.TryInstanceLink`` (same name) replaces this one and resolves the try being viewed.
    """

    name = "Spot instance"
    key = "_grid_resume_instance"
    format_str = BASE_AWS_CONSOLE_LINK + "/ec2/home?region={region_name}#InstanceDetails:instanceId={instance_id}"

    def format_link(self, **kwargs: Any) -> str:
        if kwargs.get("local_cloud") and kwargs.get("instance_id"):
            return str(kwargs["local_cloud"]) + instance_page_path(str(kwargs["instance_id"]))
        return super().format_link(**kwargs)


class GridArtifactsLink(BaseAwsLink):
    name = "Run artifacts"
    key = "_grid_resume_artifacts"
    format_str = BASE_AWS_CONSOLE_LINK + "/s3/buckets/{bucket}?region={region_name}&prefix={prefix}/"

    def format_link(self, **kwargs: Any) -> str:
        if kwargs.get("local_cloud") and kwargs.get("bucket"):
            return str(kwargs["local_cloud"]) + ledger_page_path(str(kwargs["bucket"]), f"{kwargs.get('prefix')}/")
        return super().format_link(**kwargs)
