"""EC2 spot launches for grid-resume sessions: a thin hook over boto3 with aiobotocore twins.

Sync methods serve the operator (on a worker); ``a_``-prefixed async twins serve the triggers.
Pure request building and error classification live in :mod:`airflow_grid_resume.ec2.launch`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_grid_resume.ec2.identity import belongs_to_session
from airflow_grid_resume.ec2.launch import (
    SPOT,
    LaunchSpec,
    Pair,
    classify_error,
    client_token,
    run_instances_params,
)
from airflow_grid_resume.ec2.tags import MARKET_TAG, RUN_TAG, SESSION_TAG, run_tag_value, run_tags
from airflow_grid_resume.hooks.base import NO_ANSWER, a_call_with_retries, call_with_retries, hook_client
from airflow_grid_resume.ledger.awserror import error_code, error_message

# The EC2 states of an instance that is ending or ended: nothing runs on it any more.
ENDED_STATES = ("shutting-down", "terminated")
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
MAX_FILTER_VALUES = 200  # EC2's limit on the values of one DescribeInstances filter


class LaunchError(Exception):
    """A launch that did not produce an instance; ``kind`` is capacity, throttle or fatal."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = classify_error(code)


def launch_error(exc: Exception) -> LaunchError:
    """A ClientError, or no answer at all (code ``ConnectionError``, classified transient)."""
    if isinstance(exc, ClientError):
        return LaunchError(error_code(exc) or "Unknown", error_message(exc) or str(exc))
    return LaunchError("ConnectionError", f"no answer from EC2: {type(exc).__name__}: {exc}")


def _session_filters(run_uri: str, session: int) -> list[dict]:
    """By the readable run tag, which instances launched before the digest tag carry too: it can match another
    run's instances (a long URI is cut), so what it finds is checked by ``belongs_to_session``."""
    return [
        {"Name": f"tag:{RUN_TAG}", "Values": [run_tag_value(run_uri)]},
        {"Name": f"tag:{SESSION_TAG}", "Values": [str(session)]},
        {"Name": "instance-state-name", "Values": LIVE_STATES},
    ]


def _first_instance(response: dict) -> dict | None:
    for reservation in response.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            return instance
    return None


def _session_instance(response: dict, run_uri: str, session: int) -> dict | None:
    """The first instance listed that really is the session's (its ClientToken or its full tags say so)."""
    for reservation in response.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            if belongs_to_session(instance, run_uri, session):
                return instance
    return None


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
        response = call_with_retries(lambda: self.conn.describe_subnets(SubnetIds=subnet_ids))
        found = {s["SubnetId"]: s["AvailabilityZone"] for s in response["Subnets"]}
        return {s: found[s] for s in subnet_ids}

    async def a_subnet_zones(self, subnet_ids: list[str], client: Any = None) -> dict[str, str]:
        async with hook_client(self, client) as ec2:
            response = await a_call_with_retries(lambda: ec2.describe_subnets(SubnetIds=subnet_ids))
        found = {s["SubnetId"]: s["AvailabilityZone"] for s in response["Subnets"]}
        return {s: found[s] for s in subnet_ids}

    # -- what EC2 offers -------------------------------------------------------------------------
    async def a_offerings(self, instance_types: list[str], client: Any = None) -> set[tuple[str, str]]:
        """The (type, zone) pairs the region offers among ``instance_types`` (DescribeInstanceTypeOfferings)."""
        found: set[tuple[str, str]] = set()
        async with hook_client(self, client) as ec2:
            token: str | None = None
            while True:
                kwargs: dict = {
                    "LocationType": "availability-zone",
                    "Filters": [{"Name": "instance-type", "Values": instance_types}],
                }
                if token:
                    kwargs["NextToken"] = token
                page = await a_call_with_retries(functools.partial(ec2.describe_instance_type_offerings, **kwargs))
                found |= {(o["InstanceType"], o["Location"]) for o in page.get("InstanceTypeOfferings", [])}
                token = page.get("NextToken")
                if not token:
                    return found

    async def a_types_for_requirements(self, request: dict, client: Any = None) -> list[str]:
        """The instance types of the region that meet ``request`` (GetInstanceTypesFromInstanceRequirements)."""
        found: list[str] = []
        async with hook_client(self, client) as ec2:
            token: str | None = None
            while True:
                kwargs = {**request, **({"NextToken": token} if token else {})}
                page = await a_call_with_retries(
                    functools.partial(ec2.get_instance_types_from_instance_requirements, **kwargs)
                )
                found += [t["InstanceType"] for t in page.get("InstanceTypes", []) if t["InstanceType"] not in found]
                token = page.get("NextToken")
                if not token:
                    return found

    # -- idempotency: the session's instance, if one exists -----------------------------------
    def find_session_instance(self, run_uri: str, session: int) -> dict | None:
        """The session's live instance by its tags, each checked against the whole run URI (ec2/identity.py).
        EC2 may not list an instance launched seconds ago (eventual consistency): a miss is not proof, which
        is why launches replay their last token."""
        filters = _session_filters(run_uri, session)
        response = call_with_retries(lambda: self.conn.describe_instances(Filters=filters))
        return _session_instance(response, run_uri, session)

    async def a_find_session_instance(self, run_uri: str, session: int, client: Any = None) -> dict | None:
        filters = _session_filters(run_uri, session)
        async with hook_client(self, client) as ec2:
            response = await a_call_with_retries(lambda: ec2.describe_instances(Filters=filters))
        return _session_instance(response, run_uri, session)

    async def a_find_by_client_tokens(self, tokens: list[str], client: Any = None) -> dict | None:
        """The live instance RunInstances launched under any of ``tokens``. EC2 lists it under its token as
        soon as it lists it at all, even while its tags are not shown yet."""
        async with hook_client(self, client) as ec2:
            for start in range(0, len(tokens), MAX_FILTER_VALUES):
                filters = [
                    {"Name": "client-token", "Values": tokens[start : start + MAX_FILTER_VALUES]},
                    {"Name": "instance-state-name", "Values": LIVE_STATES},
                ]
                found = _first_instance(
                    await a_call_with_retries(functools.partial(ec2.describe_instances, Filters=filters))
                )
                if found is not None:
                    return found
        return None

    # -- launching -------------------------------------------------------------------------
    def launch(
        self,
        spec: LaunchSpec,
        pair: Pair,
        *,
        market: str,
        run_uri: str,
        session: int,
        user_data: str,
        expires_at: str,
    ) -> dict:
        """One RunInstances on one pair; returns the instance or raises LaunchError."""
        params = self._params(spec, pair, market, run_uri, session, user_data, expires_at)
        try:
            response = self.conn.run_instances(**params)
        except (ClientError, *NO_ANSWER) as exc:
            raise launch_error(exc) from exc
        return response["Instances"][0]

    async def a_launch(
        self,
        spec: LaunchSpec,
        pair: Pair,
        *,
        market: str,
        run_uri: str,
        session: int,
        user_data: str,
        expires_at: str,
        client: Any = None,
    ) -> dict:
        params = self._params(spec, pair, market, run_uri, session, user_data, expires_at)
        async with hook_client(self, client) as ec2:
            try:
                response = await ec2.run_instances(**params)
            except (ClientError, *NO_ANSWER) as exc:
                raise launch_error(exc) from exc
        return response["Instances"][0]

    @staticmethod
    def _params(
        spec: LaunchSpec, pair: Pair, market: str, run_uri: str, session: int, user_data: str, expires_at: str
    ) -> dict:
        # Every parameter must be the same when a launch is retried, or EC2 rejects the ClientToken:
        # hence an expiry fixed by the caller (from when the wait began), not computed here.
        tags = run_tags(run_uri, session, expires_at, {**spec.tags, MARKET_TAG: market})
        token = client_token(run_uri, session, pair, market)
        return run_instances_params(spec, pair, market=market, token=token, tags=tags, user_data=user_data)

    # -- images ----------------------------------------------------------------------------
    def resolve_image(self, parameter: str) -> str:
        """The AMI id an SSM parameter holds now (``resolve:ssm:`` in ``image_id``): one GetParameter, as
        RunInstances would do, so DescribeImages and every launch of the try use the same AMI."""
        ssm = self.get_session(region_name=self.region_name).client(
            "ssm",
            endpoint_url=self.conn_config.get_service_endpoint_url(service_name="ssm"),
            config=self._get_config(None),
            verify=self.verify,
        )
        value = str(ssm.get_parameter(Name=parameter)["Parameter"].get("Value") or "")
        if not value.startswith("ami-"):
            raise ClientError(
                {"Error": {"Code": "InvalidAMIID.Malformed", "Message": f"{parameter} holds {value!r}, not an AMI"}},
                "GetParameter",
            )
        return value

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
        async with hook_client(self, client) as ec2:
            response = await ec2.describe_spot_price_history(
                InstanceTypes=[instance_type], AvailabilityZone=zone, ProductDescriptions=["Linux/UNIX"], MaxResults=10
            )
        return _latest_price(response)

    async def a_spot_placement_scores(
        self, instance_types: list[str], region: str, client: Any = None
    ) -> dict[str, int]:
        """zone name -> EC2's spot placement score (1 to 10: how likely a spot request of one instance of these
        types would succeed there now), from GetSpotPlacementScores per zone, the zone ids named by
        DescribeAvailabilityZones. The only question about spot capacity EC2 answers without launching."""
        async with hook_client(self, client) as ec2:
            response = await ec2.get_spot_placement_scores(
                InstanceTypes=instance_types, TargetCapacity=1, SingleAvailabilityZone=True, RegionNames=[region]
            )
            scores = {
                str(item["AvailabilityZoneId"]): int(item["Score"])
                for item in response.get("SpotPlacementScores") or []
                if item.get("AvailabilityZoneId") and item.get("Score") is not None
            }
            if not scores:
                return {}
            zones = await ec2.describe_availability_zones(ZoneIds=sorted(scores))
        return {
            z["ZoneName"]: scores[z["ZoneId"]] for z in zones.get("AvailabilityZones") or [] if z["ZoneId"] in scores
        }

    # -- describing and terminating ----------------------------------------------------------
    def describe_instances(self, instance_ids: list[str]) -> dict[str, dict]:
        """instance id -> instance, for many instances in one call. A filter by instance-id, not
        ``InstanceIds``: an id EC2 does not know (yet) is left out instead of failing the call."""
        if not instance_ids:
            return {}
        filters = [{"Name": "instance-id", "Values": list(instance_ids)}]

        def call() -> dict[str, dict]:
            pages = self.conn.get_paginator("describe_instances").paginate(Filters=filters)
            return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

        return call_with_retries(call)

    async def a_describe_instances(self, instance_ids: list[str], client: Any = None) -> dict[str, dict]:
        if not instance_ids:
            return {}
        filters = [{"Name": "instance-id", "Values": list(instance_ids)}]
        async with hook_client(self, client) as ec2:
            response = await a_call_with_retries(lambda: ec2.describe_instances(Filters=filters))
        return {i["InstanceId"]: i for r in response["Reservations"] for i in r["Instances"]}

    def terminate(self, instance_ids: list[str]) -> None:
        """TerminateInstances, retried (it is idempotent); an id EC2 does not know is skipped."""
        for instance_id in instance_ids:
            try:
                call_with_retries(functools.partial(self.conn.terminate_instances, InstanceIds=[instance_id]))
            except ClientError as exc:
                if "InvalidInstanceID" not in launch_error(exc).code:
                    raise

    async def a_terminate(self, instance_ids: list[str], client: Any = None) -> None:
        async with hook_client(self, client) as ec2:
            for instance_id in instance_ids:
                try:
                    await a_call_with_retries(functools.partial(ec2.terminate_instances, InstanceIds=[instance_id]))
                except ClientError as exc:
                    if "InvalidInstanceID" not in launch_error(exc).code:
                        raise

    def ensure_terminated(self, instance_id: str, *, timeout: float = 300.0, interval: float = 2.0) -> bool:
        """Terminate and keep at it until EC2 says shutting-down or terminated; False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.terminate([instance_id])
                state = self.describe_instances([instance_id]).get(instance_id, {}).get("State", {}).get("Name")
                if state in ENDED_STATES:
                    return True
            except (ClientError, *NO_ANSWER):
                pass  # retried already; keep trying until the deadline
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    async def a_ensure_terminated(
        self, instance_id: str, *, client: Any = None, timeout: float = 300.0, interval: float = 2.0
    ) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.a_terminate([instance_id], client=client)
                found = await self.a_describe_instances([instance_id], client=client)
                if found.get(instance_id, {}).get("State", {}).get("Name") in ENDED_STATES:
                    return True
            except (ClientError, *NO_ANSWER):
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)


__all__ = ["SPOT", "LaunchError", "SpotLaunchHook", "launch_error"]
