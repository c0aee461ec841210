"""EC2 spot launches for grid-resume sessions: a thin hook over boto3 with aiobotocore twins.

Sync methods serve the operator (on a worker); ``a_``-prefixed async twins serve the triggers.
Pure request building and error classification live in :mod:`airflow_grid_resume.spot.launch`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_grid_resume.spot.launch import (
    SPOT,
    LaunchSpec,
    Pair,
    classify_error,
    client_token,
    run_instances_params,
    run_tags,
)

RUN_TAG = "grid-resume:run-id"
SESSION_TAG = "grid-resume:session"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class LaunchError(Exception):
    """A launch that did not produce an instance; ``kind`` is capacity, throttle or fatal."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = classify_error(code)


def launch_error(exc: ClientError) -> LaunchError:
    err = exc.response.get("Error", {})
    return LaunchError(str(err.get("Code", "Unknown")), str(err.get("Message", exc)))


def _session_filters(run_id: str, session: int) -> list[dict]:
    return [
        {"Name": f"tag:{RUN_TAG}", "Values": [run_tags(run_id, session, "", {})[RUN_TAG]]},
        {"Name": f"tag:{SESSION_TAG}", "Values": [str(session)]},
        {"Name": "instance-state-name", "Values": LIVE_STATES},
    ]


def _first_instance(response: dict) -> dict | None:
    for reservation in response.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            return instance
    return None


def expiry_tag(started_at: float, hours: float) -> str:
    """The expiry tag value: ``hours`` after ``started_at`` (epoch seconds), UTC."""
    return (datetime.fromtimestamp(started_at, timezone.utc) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _latest_price(response: dict) -> str | None:
    prices = sorted(response.get("SpotPriceHistory", []), key=lambda p: p.get("Timestamp"), reverse=True)
    return str(prices[0]["SpotPrice"]) if prices else None


class SpotLaunchHook(AwsBaseHook):
    """Launch, find, describe and terminate the instance of one session of a run.

    The EC2 client makes exactly one attempt per call: botocore would otherwise retry
    InsufficientInstanceCapacity (an HTTP 500) and RequestLimitExceeded on its own, spending the
    RunInstances token bucket; the capacity trigger owns waiting and backoff instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "ec2"
        kwargs.setdefault("config", Config(retries={"mode": "standard", "total_max_attempts": 1}))
        super().__init__(*args, **kwargs)

    # -- subnets ---------------------------------------------------------------------------
    def subnet_zones(self, subnet_ids: list[str]) -> dict[str, str]:
        """subnet id -> availability zone, in the order given."""
        found = {
            s["SubnetId"]: s["AvailabilityZone"] for s in self.conn.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
        }
        return {s: found[s] for s in subnet_ids}

    async def a_subnet_zones(self, subnet_ids: list[str], client: Any = None) -> dict[str, str]:
        async with _client(self, client) as ec2:
            response = await ec2.describe_subnets(SubnetIds=subnet_ids)
        found = {s["SubnetId"]: s["AvailabilityZone"] for s in response["Subnets"]}
        return {s: found[s] for s in subnet_ids}

    # -- idempotency: the session's instance, if one exists -----------------------------------
    def find_session_instance(self, run_id: str, session: int) -> dict | None:
        return _first_instance(self.conn.describe_instances(Filters=_session_filters(run_id, session)))

    async def a_find_session_instance(self, run_id: str, session: int, client: Any = None) -> dict | None:
        async with _client(self, client) as ec2:
            return _first_instance(await ec2.describe_instances(Filters=_session_filters(run_id, session)))

    # -- launching -------------------------------------------------------------------------
    def launch(
        self,
        spec: LaunchSpec,
        pair: Pair,
        *,
        lifecycle: str,
        run_id: str,
        session: int,
        user_data: str,
        expires_at: str,
    ) -> dict:
        """One RunInstances on one pair; returns the instance or raises LaunchError."""
        params = self._params(spec, pair, lifecycle, run_id, session, user_data, expires_at)
        try:
            response = self.conn.run_instances(**params)
        except ClientError as exc:
            raise launch_error(exc) from exc
        return response["Instances"][0]

    async def a_launch(
        self,
        spec: LaunchSpec,
        pair: Pair,
        *,
        lifecycle: str,
        run_id: str,
        session: int,
        user_data: str,
        expires_at: str,
        client: Any = None,
    ) -> dict:
        params = self._params(spec, pair, lifecycle, run_id, session, user_data, expires_at)
        async with _client(self, client) as ec2:
            try:
                response = await ec2.run_instances(**params)
            except ClientError as exc:
                raise launch_error(exc) from exc
        return response["Instances"][0]

    @staticmethod
    def _params(
        spec: LaunchSpec, pair: Pair, lifecycle: str, run_id: str, session: int, user_data: str, expires_at: str
    ) -> dict:
        # Every parameter must be the same when a launch is retried, or EC2 rejects the ClientToken:
        # hence an expiry fixed by the caller (from when the wait began), not computed here.
        tags = run_tags(run_id, session, expires_at, {**spec.tags, "grid-resume:lifecycle": lifecycle})
        token = client_token(run_id, session, pair, lifecycle)
        return run_instances_params(spec, pair, lifecycle=lifecycle, token=token, tags=tags, user_data=user_data)

    # -- images ----------------------------------------------------------------------------
    def root_device_name(self, image_id: str) -> str:
        """The AMI's root device, so ``root_volume_gb`` resizes the root volume instead of adding one.
        An unknown AMI raises the ClientError EC2 sends (InvalidAMIID.*)."""
        images = self.conn.describe_images(ImageIds=[image_id]).get("Images", [])
        if not images:
            raise ClientError(
                {"Error": {"Code": "InvalidAMIID.NotFound", "Message": f"The image id '[{image_id}]' does not exist"}},
                "DescribeImages",
            )
        return str(images[0].get("RootDeviceName") or "/dev/xvda")

    # -- prices ----------------------------------------------------------------------------
    def spot_price(self, instance_type: str, zone: str) -> str | None:
        response = self.conn.describe_spot_price_history(
            InstanceTypes=[instance_type], AvailabilityZone=zone, ProductDescriptions=["Linux/UNIX"], MaxResults=10
        )
        return _latest_price(response)

    async def a_spot_price(self, instance_type: str, zone: str, client: Any = None) -> str | None:
        async with _client(self, client) as ec2:
            response = await ec2.describe_spot_price_history(
                InstanceTypes=[instance_type], AvailabilityZone=zone, ProductDescriptions=["Linux/UNIX"], MaxResults=10
            )
        return _latest_price(response)

    # -- describing and terminating ----------------------------------------------------------
    def describe_instances(self, instance_ids: list[str]) -> dict[str, dict]:
        """instance id -> instance, for many instances in one call (batched across runs)."""
        pages = self.conn.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
        return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

    async def a_describe_instances(self, instance_ids: list[str], client: Any = None) -> dict[str, dict]:
        async with _client(self, client) as ec2:
            response = await ec2.describe_instances(InstanceIds=instance_ids)
        return {i["InstanceId"]: i for r in response["Reservations"] for i in r["Instances"]}

    def terminate(self, instance_ids: list[str]) -> None:
        if instance_ids:
            self.conn.terminate_instances(InstanceIds=instance_ids)

    async def a_terminate(self, instance_ids: list[str], client: Any = None) -> None:
        if instance_ids:
            async with _client(self, client) as ec2:
                await ec2.terminate_instances(InstanceIds=instance_ids)


class _client:
    """``async with`` over a caller's long-lived client (left open) or a fresh one (closed)."""

    def __init__(self, hook: SpotLaunchHook, client: Any) -> None:
        self.hook, self.client, self._cm = hook, client, None

    async def __aenter__(self) -> Any:
        if self.client is not None:
            return self.client
        self._cm = await self.hook.get_async_conn()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)


__all__ = ["SPOT", "LaunchError", "SpotLaunchHook"]
