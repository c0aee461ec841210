"""Waiting for spot capacity without holding a worker slot: try every allowed (type, zone) pair,
back off with jitter while there is none, and hand back the one instance of the session."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import ClientError

from airflow_grid_resume.hooks.spot import LaunchError, SpotLaunchHook, expiry_tag, launch_error
from airflow_grid_resume.spot.bootstrap import render_user_data
from airflow_grid_resume.spot.launch import (
    CAPACITY,
    FATAL,
    SPOT,
    FallbackPolicy,
    LaunchSpec,
    Pair,
    backoff_delay,
    explain_fatal,
    make_pairs,
    order_pairs,
)
from airflow_grid_resume.triggers.clients import shared_client
from airflow_grid_resume.triggers.ratelimit import launch_bucket
from airflow_grid_resume.triggers.settle import settled


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class SpotCapacityTrigger(BaseTrigger):
    """Launch the instance of session ``session`` of run ``run_id``, waiting for capacity.

    Yields one event: ``launched`` (instance id, type, zone, subnet, lifecycle, spot price),
    ``timeout`` (no capacity within ``max_wait`` seconds of ``started_at``), or ``error`` (a
    launch error waiting cannot fix, with the parameter to change). A restart re-runs from these
    kwargs: the tag lookup and per-pair ClientTokens make sure no second instance is launched.
    """

    def __init__(
        self,
        *,
        run_id: str,
        run_uri: str,
        session: int,
        spec: dict,
        started_at: float,
        max_wait: float,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        backoff_base: float = 15.0,
        backoff_max: float = 300.0,
        cool_down: float = 300.0,
        fallback: dict | None = None,
        interruptions: int = 0,
        deferred_at: float | None = None,
    ) -> None:
        super().__init__()
        self.deferred_at = deferred_at
        self.run_id = run_id
        self.run_uri = run_uri
        self.session = session
        self.spec = spec
        self.started_at = started_at
        self.max_wait = max_wait
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.cool_down = cool_down
        self.fallback = fallback
        self.interruptions = interruptions

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "run_uri": self.run_uri,
                "session": self.session,
                "spec": self.spec,
                "started_at": self.started_at,
                "max_wait": self.max_wait,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "backoff_base": self.backoff_base,
                "backoff_max": self.backoff_max,
                "cool_down": self.cool_down,
                "fallback": self.fallback,
                "interruptions": self.interruptions,
                "deferred_at": self.deferred_at,
            },
        )

    def hook(self) -> SpotLaunchHook:
        return SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.deferred_at):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        spec = LaunchSpec.from_dict(self.spec)
        policy = FallbackPolicy(**(self.fallback or {}))
        hook = self.hook()
        bucket = launch_bucket(self.aws_conn_id, self.region_name)
        rng = random.Random(f"{self.run_id}:{self.session}")
        failed_at: dict[str, float] = {}
        failures_in_a_row = rounds = 0
        announced = False
        wait_log = WaitLog()
        user_data = render_user_data(self.run_uri, self.session, self.region_name)
        expires_at = expiry_tag(self.started_at, spec.expiry_hours)
        async with shared_client(hook, ("ec2", self.aws_conn_id, self.region_name)) as client:
            existing = await hook.a_find_session_instance(self.run_id, self.session, client=client)
            if existing is not None:
                self.log.info("session %d already has instance %s: reattaching", self.session, existing["InstanceId"])
                yield TriggerEvent(self._launched(existing, None, reused=True, rounds=0))
                return
            try:
                zones = await hook.a_subnet_zones(list(spec.subnet_ids), client=client)
            except ClientError as exc:
                err = launch_error(exc)
                message = explain_fatal(err.code, err.message)
                self.log.error("%s", message)
                yield TriggerEvent({"status": "error", "code": err.code, "message": message})
                return
            pairs = make_pairs(spec.instance_types, zones)
            while True:
                waited = time.time() - self.started_at
                lifecycle = policy.lifecycle(
                    capacity_failures_in_a_row=failures_in_a_row,
                    interruptions=self.interruptions,
                    waited_seconds=waited,
                )
                if lifecycle != SPOT and not announced:
                    announced = True
                    reason = policy.reason(
                        capacity_failures_in_a_row=failures_in_a_row,
                        interruptions=self.interruptions,
                        waited_seconds=waited,
                    )
                    self.log.warning("falling back to on-demand for session %d: %s", self.session, reason)
                    wait_log.append(f"falling back to on-demand: {reason}")
                misses: list[str] = []
                throttled = False
                for pair in order_pairs(pairs, failed_at, time.monotonic(), self.cool_down):
                    await bucket.acquire()
                    try:
                        instance = await hook.a_launch(
                            spec,
                            pair,
                            lifecycle=lifecycle,
                            run_id=self.run_id,
                            session=self.session,
                            user_data=user_data,
                            expires_at=expires_at,
                            client=client,
                        )
                    except LaunchError as exc:
                        if exc.kind == FATAL:
                            message = explain_fatal(exc.code, exc.message)
                            self.log.error("%s", message)
                            yield TriggerEvent(
                                {
                                    "status": "error",
                                    "code": exc.code,
                                    "message": message,
                                    "instance_type": pair.instance_type,
                                    "zone": pair.zone,
                                }
                            )
                            return
                        if exc.kind == CAPACITY:
                            failed_at[pair.key] = time.monotonic()
                            misses.append(f"{pair.instance_type} in {pair.zone} ({exc.code})")
                            continue
                        throttled = True  # RequestLimitExceeded: stop this round, back off
                        misses.append(f"{pair.instance_type} in {pair.zone} (throttled: {exc.code})")
                        break
                    price = await self._price(hook, pair, lifecycle, client)
                    event = self._launched(
                        instance, price, reused=False, rounds=rounds + 1, lifecycle=lifecycle, pair=pair
                    )
                    yield TriggerEvent({**event, "wait_log": wait_log.lines()})
                    return
                rounds += 1
                if not throttled:
                    failures_in_a_row += 1
                remaining = self.started_at + self.max_wait - time.time()
                if remaining <= 0:
                    message = (
                        f"no {lifecycle} capacity within {_duration(self.max_wait)} for any of "
                        f"{', '.join(spec.instance_types)} in {', '.join(sorted(set(zones.values())))}"
                    )
                    self.log.error("%s", message)
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "message": message,
                            "rounds": rounds,
                            "waited_seconds": time.time() - self.started_at,
                        }
                    )
                    return
                delay = min(remaining, backoff_delay(rounds, base=self.backoff_base, cap=self.backoff_max, rng=rng))
                what = "spot" if lifecycle == SPOT else "on-demand"
                line = (
                    f"no {what} capacity for {', '.join(misses)}; next try in {_duration(delay)} "
                    f"(waited {_duration(time.time() - self.started_at)} of {_duration(self.max_wait)})"
                )
                self.log.info("%s", line)
                wait_log.append(line)
                await asyncio.sleep(delay)

    def _launched(self, instance: dict, price: str | None, **kw: Any) -> dict:
        event = launched_event(instance, price, session=self.session, started_at=self.started_at, **kw)
        self.log.info("%s", describe_launch(event))
        return {**event, "run_uri": self.run_uri}

    async def _price(self, hook: SpotLaunchHook, pair: Pair, lifecycle: str, client: Any) -> str | None:
        if lifecycle != SPOT:
            return None
        try:
            return await hook.a_spot_price(pair.instance_type, pair.zone, client=client)
        except Exception as exc:  # the price is for the cost ledger; never fail a launch over it
            self.log.warning("could not read the spot price of %s in %s: %s", pair.instance_type, pair.zone, exc)
            return None


class WaitLog:
    """The capacity wait's story, carried in the launched event: Airflow 3.3 writes a try's trigger
    log to one file per triggerer, so the run trigger's log replaces this one (the UI shows only the
    current deferral's trigger log; raised upstream in the review of apache/airflow#70635, no issue
    of its own). Bounded: the first and the latest lines of a long wait, and how many were left out."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self.head: list[str] = []
        self.tail: list[str] = []
        self.dropped = 0

    def append(self, line: str) -> None:
        if len(self.head) < self.keep // 2:
            self.head.append(line)
            return
        self.tail.append(line)
        if len(self.tail) > self.keep - len(self.head):
            self.tail.pop(0)
            self.dropped += 1

    def lines(self) -> list[str]:
        skipped = [f"... {self.dropped} more rounds ..."] if self.dropped else []
        return [*self.head, *skipped, *self.tail]


def launched_event(
    instance: dict,
    price: str | None,
    *,
    session: int,
    started_at: float,
    reused: bool,
    rounds: int,
    lifecycle: str | None = None,
    pair: Pair | None = None,
) -> dict:
    """The ``launched`` event, the same whether the trigger or the operator's first attempt launched."""
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    lifecycle = lifecycle or tags.get("grid-resume:lifecycle") or instance.get("InstanceLifecycle") or SPOT
    return {
        "status": "launched",
        "session": session,
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType"),
        "zone": instance.get("Placement", {}).get("AvailabilityZone") or (pair.zone if pair else None),
        "subnet_id": instance.get("SubnetId") or (pair.subnet_id if pair else None),
        "lifecycle": "on-demand" if lifecycle in ("on-demand", "scheduled") else "spot",
        "spot_price": price,
        "reused": reused,
        "rounds": rounds,
        "waited_seconds": round(time.time() - started_at, 3),
        "launched_at": time.time(),
    }


def describe_launch(event: dict) -> str:
    price = event.get("spot_price")
    return (
        f"{'reattached to' if event.get('reused') else 'launched'} {event['lifecycle']} instance "
        f"{event['instance_id']} ({event['instance_type']} in {event['zone']}"
        f"{f', spot price {price} USD/h' if price else ''})"
    )
