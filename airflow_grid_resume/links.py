"""Extra links on the task: the current session's instance and the run's artifacts, persisted to
XCom before each deferral so they show while the task waits."""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink


class GridInstanceLink(BaseAwsLink):
    name = "Spot instance"
    key = "_grid_resume_instance"
    format_str = BASE_AWS_CONSOLE_LINK + "/ec2/home?region={region_name}#InstanceDetails:instanceId={instance_id}"


class GridArtifactsLink(BaseAwsLink):
    name = "Run artifacts"
    key = "_grid_resume_artifacts"
    format_str = BASE_AWS_CONSOLE_LINK + "/s3/buckets/{bucket}?region={region_name}&prefix={prefix}/"
