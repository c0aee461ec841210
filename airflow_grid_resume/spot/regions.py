"""The regions a session may launch in, as the launcher's links: one EC2 hook, shared client and RunInstances
token bucket per region of the spec's placements (the one-region form: the connection's region alone)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from airflow_grid_resume.asyncaws.clients import shared_client
from airflow_grid_resume.asyncaws.ratelimit import AsyncTokenBucket, launch_bucket
from airflow_grid_resume.ec2.launch import LaunchSpec
from airflow_grid_resume.hooks.base import hook_client
from airflow_grid_resume.hooks.spot import SpotLaunchHook
from airflow_grid_resume.spot.launcher import RegionLink


@contextlib.asynccontextmanager
async def region_links(
    spec: LaunchSpec,
    aws_conn_id: str | None,
    region_name: str | None,
    home: tuple[SpotLaunchHook, Any, AsyncTokenBucket],
    *,
    shared: bool = True,
) -> AsyncIterator[dict[str, RegionLink]]:
    """region -> link for every placement of ``spec``; the home region (the connection's, where the ledger is)
    reuses ``home``'s hook, client and bucket. ``shared``: the triggerer's shared clients and buckets (else one
    client per call, for the worker's first round)."""
    by_region = spec.by_region(region_name)
    links: dict[str, RegionLink] = {}
    async with contextlib.AsyncExitStack() as stack:
        for region, region_spec in by_region.items():
            if not region or region == (region_name or ""):
                hook, client, bucket = home
            else:
                hook = SpotLaunchHook(aws_conn_id=aws_conn_id, region_name=region)
                if shared:
                    client = await stack.enter_async_context(shared_client(hook, ("ec2", aws_conn_id, region)))
                    bucket = launch_bucket(aws_conn_id, region)
                else:
                    client = await stack.enter_async_context(hook_client(hook))
                    bucket = AsyncTokenBucket()
            links[region] = RegionLink(hook, client, bucket, region_spec)
        yield links


def resolve_placements(
    spec: LaunchSpec, resolve_in: Callable[[LaunchSpec, SpotLaunchHook], LaunchSpec], aws_conn_id: str | None
) -> LaunchSpec:
    """``spec`` with each placement resolved in its own region (``resolve:ssm:`` parameters hold a different AMI
    id in each region; the root device is the AMI's), by ``resolve_in(placement's spec, that region's hook)``."""
    placements = []
    for placement in spec.placements:
        hook = SpotLaunchHook(aws_conn_id=aws_conn_id, region_name=str(placement["region"]))
        resolved = resolve_in(spec.in_placement(placement), hook)
        placements.append({**placement, "image_id": resolved.image_id, "root_device_name": resolved.root_device_name})
    first = placements[0]
    return replace(
        spec, image_id=first["image_id"], root_device_name=first["root_device_name"], placements=tuple(placements)
    )


__all__ = ["region_links", "resolve_placements"]
