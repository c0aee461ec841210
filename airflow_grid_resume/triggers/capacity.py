"""Waiting for spot capacity without holding a worker slot: try every allowed (type, zone) pair,
back off with jitter while there is none, and hand back the one instance of the session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client
from airflow_grid_resume.asyncaws.ratelimit import AsyncTokenBucket, launch_bucket
from airflow_grid_resume.hooks.spot import NO_ANSWER, LaunchError, SpotLaunchHook, launch_error
from airflow_grid_resume.ledger import records
from airflow_grid_resume.spot.bootstrap import render_user_data
from airflow_grid_resume.spot.launch import (
    CAPACITY,
    SPOT,
    FallbackPolicy,
    LaunchSpec,
    Pair,
    explain_fatal,
    make_pairs,
    session_tokens,
)
from airflow_grid_resume.spot.planner import END_ROUND, GIVE_UP, RETRY_SAME, Attempt, LaunchPlanner
from airflow_grid_resume.spot.tags import MARKET_TAG, expiry_tag
from airflow_grid_resume.triggers.run import AsyncLedgerReader
from airflow_grid_resume.watch.settle import settled

# How much of EC2's error message the wait record keeps (the code says what happened; the message, where).
ANSWER_MESSAGE_CHARS = 200


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
        expires_at: str | None = None,
    ) -> None:
        super().__init__()
        self.expires_at = expires_at
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
                "expires_at": self.expires_at,
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
        ):
            launcher = SessionLauncher(
                hook,
                client,
                AsyncLedgerReader(s3, self.run_uri, self.session),
                spec=spec,
                run_id=self.run_id,
                run_uri=self.run_uri,
                session=self.session,
                region=self.region_name,
                expires_at=self.expires_at or expiry_tag(self.started_at, spec.expiry_hours),
                bucket=bucket,
                log=self.log,
            )
            try:
                pairs = await launcher.pairs()
            except (ClientError, *NO_ANSWER) as exc:
                err = launch_error(exc)
                message = explain_fatal(err.code, err.message)
                self.log.error("%s", message)
                yield TriggerEvent({"status": "error", "code": err.code, "message": message})
                return
            existing = await launcher.existing(pairs)
            if existing is not None:
                self.log.info("session %d already has instance %s: reattaching", self.session, existing["InstanceId"])
                yield TriggerEvent(self._launched(existing, None, reused=True, rounds=0))
                return
            planner = LaunchPlanner(
                pairs,
                run_id=self.run_id,
                session=self.session,
                policy=FallbackPolicy(**(self.fallback or {})),
                interruptions=self.interruptions,
                cool_down=self.cool_down,
                backoff_base=self.backoff_base,
                backoff_max=self.backoff_max,
                replay=await launcher.last_attempt(),
            )
            while True:
                waited = time.time() - self.started_at
                lifecycle = planner.lifecycle(waited)
                if lifecycle != SPOT and not announced:
                    announced = True
                    reason = planner.fallback_reason(waited)
                    self.log.warning("falling back to on-demand for session %d: %s", self.session, reason)
                    wait_log.append(f"falling back to on-demand: {reason}")
                result = await launcher.round(planner, waited)
                if result.error is not None:
                    yield TriggerEvent({"status": "error", **result.error})
                    return
                if result.instance is not None and result.attempt is not None:
                    price = await self._price(hook, result.attempt.pair, result.attempt.lifecycle, client)
                    event = self._launched(
                        result.instance,
                        price,
                        reused=False,
                        rounds=planner.rounds + 1,
                        lifecycle=result.attempt.lifecycle,
                        pair=result.attempt.pair,
                    )
                    yield TriggerEvent({**event, "wait_log": wait_log.lines()})
                    return
                backoff = planner.end_round()
                remaining = self.started_at + self.max_wait - time.time()
                if remaining <= 0:
                    zones = sorted({p.zone for p in pairs})
                    message = (
                        f"no {lifecycle} capacity within {_duration(self.max_wait)} for any of "
                        f"{', '.join(spec.instance_types)} in {', '.join(zones)}"
                    )
                    self.log.error("%s", message)
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "message": message,
                            "rounds": planner.rounds,
                            "waited_seconds": time.time() - self.started_at,
                        }
                    )
                    return
                delay = min(remaining, backoff)
                await launcher.waiting(next_try_in=delay, rounds=planner.rounds, lifecycle=lifecycle)
                what = "spot" if lifecycle == SPOT else "on-demand"
                line = (
                    f"no {what} capacity for {', '.join(result.misses)}; next try in {_duration(delay)} "
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


@dataclass
class RoundResult:
    """One round over the pairs: the instance launched, or what stopped the round."""

    instance: dict | None = None
    attempt: Attempt | None = None
    error: dict | None = None  # an error waiting cannot fix: code, message, instance_type, zone
    misses: list[str] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)  # EC2's answer per pair tried (see SessionLauncher.waiting)


class SessionLauncher:
    """The I/O of launching one session's instance, shared by the worker's first round and the capacity
    trigger: the tag lookup, the durable record of the last attempt, and a round of RunInstances as
    :class:`~airflow_grid_resume.spot.planner.LaunchPlanner` orders it.

    The record (``sessions/N/launch-attempt.json``) is also what the run view shows of a capacity wait:
    ``phase`` (``trying``: written before an attempt; ``backing-off``: written once at the end of a round
    that found nothing), ``answers`` (EC2's answer per pair in the last round that ended: type, zone,
    market, code, kind, message), ``rounds`` and, while backing off, ``next_try_in`` (seconds from ``at``,
    the writer's clock; readers measure from the object's Last-Modified by S3's clock instead, so a skewed
    triggerer clock does not move the countdown). At most one PUT per attempt that differs from the last
    one recorded plus one per round: never per poll.
    """

    def __init__(
        self,
        hook: SpotLaunchHook,
        client: Any,
        ledger: AsyncLedgerReader,
        *,
        spec: LaunchSpec,
        run_id: str,
        run_uri: str,
        session: int,
        region: str | None,
        expires_at: str,
        bucket: AsyncTokenBucket,
        log: Any,
    ) -> None:
        self.hook, self.client, self.ledger = hook, client, ledger
        self.spec = spec
        self.run_id, self.session = run_id, session
        self.user_data = render_user_data(run_uri, session, region)
        self.expires_at = expires_at
        self.bucket = bucket
        self.log = log
        self._recorded: dict | None = None
        self._answers: list[dict] = []  # of the last round that ended
        self._rounds = 0

    def _doc(self, attempt: dict | None, phase: str, **extra: Any) -> records.LaunchAttempt:
        return records.LaunchAttempt(
            session=self.session,
            expires_at=self.expires_at,
            attempt=attempt,
            at=time.time(),
            phase=phase,
            rounds=self._rounds,
            answers=self._answers,
            **extra,
        )

    async def existing(self, pairs: list[Pair]) -> dict | None:
        """The session's instance, if one was launched: by its tags, else by the ClientToken of any attempt
        the session could have made on ``pairs`` (a launcher that died before its attempt was recorded,
        while EC2 did not show the instance's tags yet). A miss is no proof: EC2 may not list an instance
        launched seconds ago, which is why the recorded attempt is replayed first."""
        found = await self.hook.a_find_session_instance(self.run_id, self.session, client=self.client)
        if found is None:
            tokens = session_tokens(self.run_id, self.session, pairs)
            found = await self.hook.a_find_by_client_tokens(tokens, client=self.client)
        return found

    async def pairs(self) -> list[Pair]:
        zones = await self.hook.a_subnet_zones(list(self.spec.subnet_ids), client=self.client)
        return make_pairs(self.spec.instance_types, zones)

    async def last_attempt(self) -> Attempt | None:
        """The attempt the previous launcher of this session made last: replayed first, with its token."""
        try:
            found = await self.ledger.get_record(records.LaunchAttempt)
        except (ClientError, *NO_ANSWER) as exc:
            self.log.warning("could not read the last launch attempt of session %d: %s", self.session, exc)
            return None
        if found is None:
            return None
        self._recorded = found.attempt
        if found.answers is not None and found.rounds is not None:  # a restarted trigger
            self._answers, self._rounds = found.answers, found.rounds
        try:
            return Attempt.from_dict(found.attempt) if found.attempt else None
        except (KeyError, TypeError, ValueError):
            return None

    async def _record(self, attempt: Attempt) -> None:
        """Before an attempt: note it in the ledger, so a launcher started after a crash replays it."""
        doc = attempt.as_dict()
        if doc == self._recorded:
            return
        try:
            await self.ledger.put_record(self._doc(doc, "trying"))
            self._recorded = doc
        except (ClientError, *NO_ANSWER) as exc:  # the tag lookup still protects a restart
            self.log.warning("could not record the launch attempt of session %d: %s", self.session, exc)

    async def waiting(self, *, next_try_in: float, rounds: int, lifecycle: str) -> None:
        """A round found nothing: record EC2's answers and when the next round starts (one PUT), for
        the run view. The attempt recorded for a replay stays as it was."""
        self._rounds = rounds
        try:
            await self.ledger.put_record(
                self._doc(self._recorded, "backing-off", next_try_in=round(next_try_in, 1), lifecycle=lifecycle)
            )
        except (ClientError, *NO_ANSWER) as exc:  # only the run view misses it
            self.log.warning("could not record the capacity wait of session %d: %s", self.session, exc)

    @staticmethod
    def _answer(attempt: Attempt, exc: LaunchError) -> dict:
        return {
            "instance_type": attempt.pair.instance_type,
            "zone": attempt.pair.zone,
            "lifecycle": attempt.lifecycle,
            "code": exc.code,
            "kind": exc.kind,
            "message": str(exc.message or "")[:ANSWER_MESSAGE_CHARS],
        }

    async def round(self, planner: LaunchPlanner, waited: float) -> RoundResult:
        result = await self._round(planner, waited)
        if result.instance is None and result.error is None and result.answers:
            self._answers = result.answers  # what the run view shows until the next round ends
        return result

    async def _round(self, planner: LaunchPlanner, waited: float) -> RoundResult:
        result = RoundResult()
        for attempt in planner.round(time.monotonic(), waited):
            while True:
                await self._record(attempt)
                planner.before(attempt)
                await self.bucket.acquire()
                try:
                    instance = await self.hook.a_launch(
                        self.spec,
                        attempt.pair,
                        lifecycle=attempt.lifecycle,
                        run_id=self.run_id,
                        session=self.session,
                        user_data=self.user_data,
                        expires_at=self.expires_at,
                        client=self.client,
                    )
                except LaunchError as exc:
                    action = planner.failed(attempt, exc.kind, time.monotonic())
                    where = f"{attempt.pair.instance_type} in {attempt.pair.zone}"
                    if action == GIVE_UP:
                        message = explain_fatal(exc.code, exc.message)
                        self.log.error("%s", message)
                        result.error = {
                            "code": exc.code,
                            "message": message,
                            "instance_type": attempt.pair.instance_type,
                            "zone": attempt.pair.zone,
                        }
                        return result
                    if action == RETRY_SAME:
                        delay = planner.transient_delay()
                        self.log.warning(
                            "launch of %s got no clear answer (%s); retrying it with the same ClientToken in %.0f s",
                            where,
                            exc.code,
                            delay,
                        )
                        await asyncio.sleep(delay)
                        continue
                    result.answers.append(self._answer(attempt, exc))
                    result.misses.append(
                        f"{where} ({exc.code})" if exc.kind == CAPACITY else f"{where} ({exc.kind}: {exc.code})"
                    )
                    if action == END_ROUND:
                        return result
                    break
                planner.launched(attempt)
                result.instance, result.attempt = instance, attempt
                return result
        return result


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
    lifecycle = lifecycle or tags.get(MARKET_TAG) or instance.get("InstanceLifecycle") or SPOT
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
