"""Extra links on the task: the current session's instance and the run's artifacts, persisted to
XCom before each deferral so they show while the task waits.

On AWS they open the console in the connection's partition and region. An endpoint the AWS console cannot
show (the local spot cloud, LocalStack) names its own console in the connection's extra ``console_url`` or
in ``$GRID_RESUME_CONSOLE_URL``; the links then open ``{console_url}/instances/{id}`` and
``{console_url}/ledger?bucket=...&prefix=...``. Nothing is probed: a custom endpoint alone changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

CONSOLE_URL_ENV = "GRID_RESUME_CONSOLE_URL"
# What the links need besides the resource: persisted with each link's XCom and read back by the UI plugin.
LINK_CONF = ("region_name", "aws_domain", "console_url")


def link_target(hook: Any) -> dict[str, Any]:
    """Where links point for this connection: its region and partition, and its own console if it names one."""
    region = hook.conn_region_name or "us-east-1"
    try:
        partition = hook.conn_partition
    except Exception:  # a region botocore does not know: the commercial partition
        partition = "aws"
    extra = getattr(hook.conn_config, "extra_config", None) or {}
    console = extra.get("console_url") or os.environ.get(CONSOLE_URL_ENV) or None
    return {"region_name": region, "aws_partition": partition, "console_url": console and console.rstrip("/")}


def instance_url(conf: Mapping[str, Any], instance_id: str | None) -> str | None:
    """The instance's link from a link configuration (``LINK_CONF``), or None when there is nothing to open."""
    if not instance_id or not (conf.get("console_url") or conf.get("aws_domain")):
        return None
    return GridInstanceLink().format_link(**{**conf, "instance_id": instance_id}) or None


class GridInstanceLink(BaseAwsLink):
    """The instance of the task's current (or last) try, persisted to XCom before each deferral.

    XComs belong to the task instance, not to a try, so on the api-server the plugin's
    ``ui.trylink.TryInstanceLink`` (same name) replaces this one and resolves the try being viewed.
    """

    name = "Spot instance"
    key = "_grid_resume_instance"
    format_str = BASE_AWS_CONSOLE_LINK + "/ec2/home?region={region_name}#InstanceDetails:instanceId={instance_id}"

    def format_link(self, **kwargs: Any) -> str:
        if kwargs.get("console_url") and kwargs.get("instance_id"):
            return f"{kwargs['console_url']}/instances/{quote(str(kwargs['instance_id']), safe='')}"
        return super().format_link(**kwargs)


class GridArtifactsLink(BaseAwsLink):
    name = "Run artifacts"
    key = "_grid_resume_artifacts"
    format_str = BASE_AWS_CONSOLE_LINK + "/s3/buckets/{bucket}?region={region_name}&prefix={prefix}/"

    def format_link(self, **kwargs: Any) -> str:
        if kwargs.get("console_url") and kwargs.get("bucket"):
            bucket, prefix = quote(str(kwargs["bucket"]), safe=""), quote(f"{kwargs.get('prefix')}/", safe="")
            return f"{kwargs['console_url']}/ledger?bucket={bucket}&prefix={prefix}"
        return super().format_link(**kwargs)
