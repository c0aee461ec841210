"""Waiting for spot capacity without holding a worker slot: try every allowed (type, zone) pair,
back off with jitter while there is none, and hand back the one instance of the session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client
from airflow_grid_resume.asyncaws.ledgerreader import AsyncLedgerReader
from airflow_grid_resume.asyncaws.ratelimit import launch_bucket
from airflow_grid_resume.ec2.launch import SPOT, LaunchSpec
from airflow_grid_resume.ec2.tags import expiry_tag
from airflow_grid_resume.hooks.spot import SpotLaunchHook
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.run.deadline import DeadlineContext, LaunchChooser
from airflow_grid_resume.spot import fleetstore
from airflow_grid_resume.spot.launcher import PairsUnknown, SessionLauncher, describe_launch
from airflow_grid_resume.spot.regions import region_links
from airflow_grid_resume.watch.settle import settled


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
    """Launch the instance of session ``session`` of the run at ``run_uri``, waiting for capacity.

    Yields one event: ``launched`` (instance id, type, zone, subnet, market, spot price),
    ``timeout`` (no capacity within ``max_wait`` seconds of ``started_at``), or ``error`` (a
    launch error waiting cannot fix, with the parameter to change). A restart re-runs from these
    kwargs: the tag lookup and per-pair ClientTokens make sure no second instance is launched.
    """

    def __init__(
        self,
        *,
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
        expires_at: str | None = None,
        run_id: str | None = None,  # the run URI again, from triggers serialized before run_uri said it alone
        s3_write: dict | None = None,  # S3WriteOptions.to_json(): what the trigger's writes carry
        fleet_uri: str | None = None,
        run_state: dict | None = None,
        deadline: dict | None = None,  # a deadline= run: its DeadlineContext (run/deadline.py) as plain JSON
    ) -> None:
        super().__init__()
        self.s3_write = s3_write
        self.fleet_uri = fleet_uri  # the fleet record the launch order reads (spot/fleetstore.py)
        self.run_state = run_state  # the run's own story: the pool that just reclaimed it... (spot/placement.py)
        self.expires_at = expires_at
        self.deferred_at = deferred_at
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
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_uri": self.run_uri,
                "session": self.session,
                "s3_write": self.s3_write,
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
                "expires_at": self.expires_at,
                "fleet_uri": self.fleet_uri,
                "run_state": self.run_state,
                "deadline": self.deadline,
            },
        )

    def hook(self) -> SpotLaunchHook:
        return SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.deferred_at):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        spec = LaunchSpec.from_dict(self.spec)
        hook = self.hook()
        s3_hook = SharedS3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        bucket = launch_bucket(self.aws_conn_id, self.region_name)
        wait_log = WaitLog()
        announced = False
        async with (
            shared_client(hook, ("ec2", self.aws_conn_id, self.region_name)) as client,
            shared_client(s3_hook, ("s3", self.aws_conn_id, self.region_name)) as s3,
            region_links(spec, self.aws_conn_id, self.region_name, (hook, client, bucket)) as links,
        ):
            launcher = SessionLauncher(
                hook,
                client,
                AsyncLedgerReader(
                    s3, self.run_uri, self.session, write_options=S3WriteOptions.from_json(self.s3_write)
                ),
                spec=spec,
                run_uri=self.run_uri,
                session=self.session,
                region=self.region_name,
                expires_at=self.expires_at or expiry_tag(self.started_at, spec.expiry_hours),
                bucket=bucket,
                log=self.log,
                links=links,
            )
            try:
                start = await launcher.start(
                    fallback=self.fallback,
                    interruptions=self.interruptions,
                    cool_down=self.cool_down,
                    backoff_base=self.backoff_base,
                    backoff_max=self.backoff_max,
                    record=(record := await fleetstore.a_read(s3, self.fleet_uri)),
                    run_state=self.run_state,
                    chooser=self._chooser(record),
                )
            except PairsUnknown as exc:
                self.log.error("%s", exc.message)
                yield TriggerEvent({"status": "error", "code": exc.code, "message": exc.message})
                return
            if start.existing is not None:
                self.log.info(
                    "session %d already has instance %s: reattaching", self.session, start.existing["InstanceId"]
                )
                yield TriggerEvent(self._announce(launcher.reattached(start.existing, started_at=self.started_at)))
                return
            planner, pairs = start.planner, start.pairs
            assert planner is not None
            while True:
                waited = time.time() - self.started_at
                market = planner.market(waited)
                if market != SPOT and not announced and planner.chooser is None:
                    announced = True
                    reason = planner.fallback_reason(waited)
                    self.log.warning("falling back to on-demand for session %d: %s", self.session, reason)
                    wait_log.append(f"falling back to on-demand: {reason}")
                result = await launcher.round(planner, waited)
                if result.error is not None:
                    yield TriggerEvent({"status": "error", **result.error})
                    return
                if result.instance is not None:
                    event = await launcher.launched(result, started_at=self.started_at, rounds=planner.rounds + 1)
                    yield TriggerEvent({**self._announce(event), "wait_log": wait_log.lines()})
                    return
                backoff = planner.end_round()
                remaining = self.started_at + self.max_wait - time.time()
                if remaining <= 0:
                    zones = sorted({p.zone for p in pairs})
                    types = sorted({p.instance_type for p in pairs})
                    message = (
                        f"no {market} capacity within {_duration(self.max_wait)} for any of "
                        f"{', '.join(types)} in {', '.join(zones)}"
                    )
                    self.log.error("%s", message)
                    yield TriggerEvent(
                        {
                            "status": "timeout",  # no capacity within max_wait (not a session status: no session ran)
                            "message": message,
                            "rounds": planner.rounds,
                            "waited_seconds": time.time() - self.started_at,
                            "answers": launcher.observed,
                        }
                    )
                    return
                delay = min(remaining, backoff)
                market = planner.market(waited)
                await launcher.waiting(next_try_in=delay, rounds=planner.rounds, market=market)
                what = "spot" if market == SPOT else "on-demand"
                found = (
                    f"no {what} capacity for {', '.join(result.misses)}"
                    if result.misses
                    else "the deadline policy waits for spot"
                )
                line = (
                    f"{found}; next try in {_duration(delay)} "
                    f"(waited {_duration(time.time() - self.started_at)} of {_duration(self.max_wait)})"
                )
                self.log.info("%s", line)
                wait_log.append(line)
                await asyncio.sleep(delay)

    def _chooser(self, record: dict | None) -> LaunchChooser | None:
        """A deadline= run: the policy decides each round's market instead of the fallback counters, seeing what
        the fleet ``record`` says of each pool."""
        if not self.deadline:
            return None
        ctx = DeadlineContext.from_dict(self.deadline)
        return LaunchChooser(ctx, point="capacity", tick_seconds=self.backoff_base, record=record)

    def _announce(self, event: dict) -> dict:
        self.log.info("%s", describe_launch(event))
        return event


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
