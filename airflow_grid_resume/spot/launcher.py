"""Launching one session's instance: the I/O that the worker's first round and the capacity trigger share.

Both assemble the same pieces through :class:`SessionLauncher`: the (type, zone) pairs of the spec's subnets, the
lookup of an instance the session already has, a :class:`~airflow_grid_resume.spot.planner.LaunchPlanner` that
replays the last recorded attempt first, rounds of RunInstances in the planner's order, and the ``launched`` event
with the spot price paid. Only the waiting between rounds differs, and stays with its caller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.ratelimit import AsyncTokenBucket
from airflow_grid_resume.ec2.bootstrap import render_user_data
from airflow_grid_resume.ec2.launch import (
    CAPACITY,
    ON_DEMAND,
    SPOT,
    FallbackPolicy,
    LaunchSpec,
    Pair,
    explain_fatal,
    make_pairs,
    pick_resolved_types,
    requirements_request,
    session_tokens,
)
from airflow_grid_resume.ec2.prices import ON_DEMAND_USD_PER_HOUR
from airflow_grid_resume.ec2.tags import MARKET_TAG
from airflow_grid_resume.hooks.base import NO_ANSWER
from airflow_grid_resume.hooks.spot import LaunchError, SpotLaunchHook, launch_error
from airflow_grid_resume.ledger import records
from airflow_grid_resume.spot import catalog
from airflow_grid_resume.spot.observe import MAX_ANSWERS, capacity_answers
from airflow_grid_resume.spot.placement import MarketChoice, RunState
from airflow_grid_resume.spot.planner import END_ROUND, GIVE_UP, RETRY_SAME, Attempt, Chooser, LaunchPlanner

# How much of EC2's error message the wait record keeps (the code says what happened; the message, where).
ANSWER_MESSAGE_CHARS = 200


R = TypeVar("R", bound=records.Record)


class SessionRecords(Protocol):
    """The session's records the launcher reads and writes (the async ledger reader of the triggers)."""

    async def get_record(self, cls: type[R]) -> R | None: ...

    async def put_record(self, record: records.Record) -> None: ...


class PairsUnknown(Exception):
    """The spec's subnets could not be read (a missing subnet, no permission...): waiting cannot fix it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Start:
    """Where a launcher starts: the session's instance if it already has one, else the planner of its rounds."""

    pairs: list[Pair]
    existing: dict | None = None
    planner: LaunchPlanner | None = None


@dataclass
class RoundResult:
    """One round over the pairs: the instance launched, or what stopped the round."""

    instance: dict | None = None
    attempt: Attempt | None = None
    error: dict | None = None  # an error waiting cannot fix: code, message, instance_type, zone
    misses: list[str] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)  # EC2's answer per pair tried (see SessionLauncher.waiting)


@dataclass
class RegionLink:
    """One region a session may launch in: its EC2 hook and client, its RunInstances token bucket, and the
    spec of its placement (its own image, subnets, security groups and instance profile)."""

    hook: SpotLaunchHook
    client: Any
    bucket: AsyncTokenBucket
    spec: LaunchSpec


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
        ledger: SessionRecords,
        *,
        spec: LaunchSpec,
        run_uri: str,
        session: int,
        region: str | None,
        expires_at: str,
        bucket: AsyncTokenBucket,
        log: Any,
        links: dict[str, RegionLink] | None = None,
    ) -> None:
        self.hook, self.client, self.ledger = hook, client, ledger
        self.spec = spec
        # Every region the session may launch in; the one-region form is one link, keyed by its region ("" when
        # the connection decides). The ledger, the user data's region and the live queue stay in ``region``.
        self.links = links or {region or "": RegionLink(hook, client, bucket, spec)}
        self.run_uri, self.session = run_uri, session
        self.user_data = render_user_data(
            run_uri, session, region, agent_sha256=spec.agent_sha256, spec_sha256=spec.spec_sha256
        )
        self.expires_at = expires_at
        self.bucket = bucket
        self.log = log
        self.region = region
        self._recorded: dict | None = None
        self._answers: list[dict] = []  # of the last round that ended
        self._rounds = 0
        self.observed: list[list] = []  # capacity answers for the fleet record: [pool, kind, at]
        self.offered: set[tuple[str, str]] | None = None  # None: not known (no permission, no answer)
        self.resolved: list[str] = []  # the types instance_requirements resolved to (in any region)
        self._decided: tuple | None = None  # the last policy decision recorded (deadline= runs)

    async def start(
        self,
        *,
        fallback: dict | None,
        interruptions: int,
        cool_down: float = 300.0,
        backoff_base: float = 15.0,
        backoff_max: float = 300.0,
        record: dict | None = None,
        run_state: dict | None = None,
        choice: MarketChoice | None = None,
        chooser: Chooser | None = None,
    ) -> Start:
        """The pairs, then the session's instance if it has one, else the planner of its rounds (the last
        recorded attempt replayed first; the order from the fleet ``record`` and the run's state). Raises
        PairsUnknown when the subnets cannot be read or no pair is offered."""
        try:
            pairs = await self.pairs()
        except (ClientError, *NO_ANSWER) as exc:
            err = launch_error(exc)
            raise PairsUnknown(err.code, explain_fatal(err.code, err.message)) from exc
        existing = await self.existing(pairs)
        if existing is not None:
            return Start(pairs, existing=existing)
        if not pairs:
            message = (
                "no instance type of any placement's region meets instance_requirements "
                "(GetInstanceTypesFromInstanceRequirements found none). Fix the operator's 'instance_requirements' "
                "or name 'instance_types'."
            )
            raise PairsUnknown("InvalidParameterValue", message)
        if self.offered is not None and not any((p.instance_type, p.zone) in self.offered for p in pairs):
            types = sorted({p.instance_type for p in pairs})
            zones = sorted({p.zone for p in pairs})
            message = (
                f"none of the instance types {', '.join(types)} is offered in the zones of the subnets "
                f"({', '.join(zones)}) (DescribeInstanceTypeOfferings). Fix the operator's 'instance_types' "
                "(or 'instance_requirements') or 'subnet_ids'."
            )
            raise PairsUnknown("Unsupported", message)
        planner = LaunchPlanner(
            pairs,
            run_uri=self.run_uri,
            session=self.session,
            policy=FallbackPolicy(**(fallback or {})),
            interruptions=interruptions,
            replay=await self.last_attempt(),
            cool_down=cool_down,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            record=record,
            run_state=RunState.from_dict(run_state),
            offered=self.offered,
            choice=choice,
            chooser=chooser,
        )
        return Start(pairs, planner=planner)

    async def launched(self, result: RoundResult, *, started_at: float, rounds: int) -> dict:
        """The ``launched`` event of an instance this launcher's round started, with the spot price paid."""
        assert result.instance is not None and result.attempt is not None
        pair, market = result.attempt.pair, result.attempt.market
        price = None
        if market == SPOT:
            link = self.link(pair)
            try:
                price = await link.hook.a_spot_price(pair.instance_type, pair.zone, client=link.client)
            except Exception as exc:  # the price is for the cost ledger; never fail a launch over it
                self.log.warning("could not read the spot price of %s in %s: %s", pair.instance_type, pair.zone, exc)
        event = launched_event(
            result.instance,
            price,
            session=self.session,
            started_at=started_at,
            reused=False,
            rounds=rounds,
            market=market,
            pair=pair,
        )
        return {**event, "run_uri": self.run_uri, "answers": self.observed, **self._where(pair)}

    def _where(self, pair: Pair | None = None) -> dict:
        region = (pair.region if pair else "") or self.region
        where: dict = {"region": region} if region else {}
        if self.resolved:
            where["resolved_types"] = self.resolved
        return where

    def reattached(self, instance: dict, *, started_at: float) -> dict:
        """The ``launched`` event of the instance the session already had (``_region``: where it was found)."""
        event = launched_event(instance, None, session=self.session, started_at=started_at, reused=True, rounds=0)
        region = instance.get("_region") or self.region
        return {**event, "run_uri": self.run_uri, **({"region": region} if region else {})}

    def link(self, pair: Pair) -> RegionLink:
        """The region a pair launches in (a pair recorded by an earlier release has no region: the first)."""
        return self.links.get(pair.region) or next(iter(self.links.values()))

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
        for region, link in self.links.items():
            found = await link.hook.a_find_session_instance(self.run_uri, self.session, client=link.client)
            if found is None:
                tokens = session_tokens(self.run_uri, self.session, [p for p in pairs if self.link(p) is link])
                found = await link.hook.a_find_by_client_tokens(tokens, client=link.client)
            if found is not None:
                return {**found, "_region": region} if len(self.links) > 1 else found
        return None

    async def pairs(self) -> list[Pair]:
        """Every (type, subnet) pair of every region, regions in the author's order: the listed types, then those
        ``instance_requirements`` resolve to in that region; and what EC2 offers of them (``self.offered``;
        unknown when a region cannot be asked)."""
        pairs: list[Pair] = []
        offered: set[tuple[str, str]] | None = set()
        for region, link in self.links.items():
            found, region_offered = await self._region_pairs(region, link)
            pairs += found
            offered = None if offered is None or region_offered is None else offered | region_offered
        self.offered = offered
        skipped = [p for p in pairs if offered is not None and (p.instance_type, p.zone) not in offered]
        if skipped:
            self.log.info("not offered, skipped: %s", ", ".join(f"{p.instance_type} in {p.zone}" for p in skipped))
        return pairs

    async def _region_pairs(self, region: str, link: RegionLink) -> tuple[list[Pair], set[tuple[str, str]] | None]:
        zones = await link.hook.a_subnet_zones(list(link.spec.subnet_ids), client=link.client)
        types = list(link.spec.instance_types)
        if link.spec.instance_requirements:
            request = requirements_request(link.spec.instance_requirements)
            key = (self._endpoint(link), region, repr(sorted(request.items())))
            resolved = await catalog.REQUIREMENTS.get_or_load(
                key, lambda: link.hook.a_types_for_requirements(request, client=link.client)
            )
            self.resolved += [t for t in resolved if t not in self.resolved]
            types = pick_resolved_types(resolved, types, dict(ON_DEMAND_USD_PER_HOUR))
            self.log.info(
                "instance_requirements resolved in %s to %d types: %s; trying %s",
                region or "the region",
                len(resolved),
                ", ".join(resolved) or "none",
                ", ".join(types) or "none",
            )
            if not types:
                return [], set()
        try:
            offered = await catalog.OFFERINGS.get_or_load(
                (self._endpoint(link), region, tuple(sorted(types))),
                lambda: link.hook.a_offerings(types, client=link.client),
            )
        except (ClientError, *NO_ANSWER) as exc:  # e.g. no ec2:DescribeInstanceTypeOfferings: try every pair
            self.log.warning("could not read the instance type offerings of %s (every pair is tried): %s", region, exc)
            offered = None
        return make_pairs(types, zones, region), offered

    @staticmethod
    def _endpoint(link: RegionLink) -> str:
        return str(getattr(getattr(link.client, "meta", None), "endpoint_url", "") or "")

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

    async def waiting(self, *, next_try_in: float, rounds: int, market: str) -> None:
        """A round found nothing: record EC2's answers and when the next round starts (one PUT), for
        the run view. The attempt recorded for a replay stays as it was."""
        self._rounds = rounds
        try:
            await self.ledger.put_record(
                self._doc(
                    self._recorded, "backing-off", next_try_in=round(next_try_in, 1), lifecycle=market
                )  # the record keeps its field name
            )
        except (ClientError, *NO_ANSWER) as exc:  # only the run view misses it
            self.log.warning("could not record the capacity wait of session %d: %s", self.session, exc)

    @staticmethod
    def _answer(attempt: Attempt, exc: LaunchError) -> dict:
        answer = {
            "instance_type": attempt.pair.instance_type,
            "zone": attempt.pair.zone,
            "lifecycle": attempt.market,
            "code": exc.code,
            "kind": exc.kind,
            "message": str(exc.message or "")[:ANSWER_MESSAGE_CHARS],
        }
        if attempt.pair.region:
            answer["region"] = attempt.pair.region
        return answer

    async def round(self, planner: LaunchPlanner, waited: float) -> RoundResult:
        result = await self._round(planner, waited)
        if result.instance is None and result.error is None and result.answers:
            self._answers = result.answers  # what the run view shows until the next round ends
        self.observed = [*self.observed, *capacity_answers(result.answers, time.time())][-MAX_ANSWERS:]
        return result

    async def _record_decision(self, planner: LaunchPlanner) -> None:
        """A deadline= run: the policy's last decision of the round, for the run view, when it differs from the
        last one recorded (one PUT per change, never per round: a round asks as if spot were there first)."""
        if not planner.decisions:
            return
        record = planner.decisions[-1]
        planner.decisions.clear()
        key = tuple(getattr(record, name, None) for name in ("action", "pool", "point", "commit"))
        if key == self._decided:
            return
        self._decided = key
        self.log.info("deadline policy: %s", getattr(record, "reason", record))
        try:
            await self.ledger.put_record(record)
        except (ClientError, *NO_ANSWER) as exc:  # only the run view misses it
            self.log.warning("could not record the policy's decision for session %d: %s", self.session, exc)

    async def _round(self, planner: LaunchPlanner, waited: float) -> RoundResult:
        result = RoundResult()
        attempts = planner.round(time.monotonic(), waited)
        while attempts:
            if await self._attempts(planner, attempts, result):
                break
            attempts = planner.follow_up(time.monotonic(), waited)
        await self._record_decision(planner)
        return result

    async def _attempts(self, planner: LaunchPlanner, attempts: list[Attempt], result: RoundResult) -> bool:
        """The attempts of one phase of a round; True when the round is over (launched, an error, end-round)."""
        for attempt in attempts:
            link = self.link(attempt.pair)
            while True:
                await self._record(attempt)
                planner.before(attempt)
                await link.bucket.acquire()
                try:
                    instance = await link.hook.a_launch(
                        link.spec,
                        attempt.pair,
                        market=attempt.market,
                        run_uri=self.run_uri,
                        session=self.session,
                        user_data=self.user_data,
                        expires_at=self.expires_at,
                        client=link.client,
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
                        return True
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
                        return True
                    break
                planner.launched(attempt)
                result.instance, result.attempt = instance, attempt
                return True
        return False


def launched_event(
    instance: dict,
    price: str | None,
    *,
    session: int,
    started_at: float,
    reused: bool,
    rounds: int,
    market: str | None = None,
    pair: Pair | None = None,
) -> dict:
    """The ``launched`` event, the same whether the trigger or the operator's first attempt launched."""
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    market = market or tags.get(MARKET_TAG) or instance.get("InstanceLifecycle") or SPOT
    return {
        "status": "launched",
        "session": session,
        "instance_id": instance["InstanceId"],
        "instance_type": instance.get("InstanceType"),
        "zone": instance.get("Placement", {}).get("AvailabilityZone") or (pair.zone if pair else None),
        "subnet_id": instance.get("SubnetId") or (pair.subnet_id if pair else None),
        "lifecycle": ON_DEMAND if market in (ON_DEMAND, "scheduled") else SPOT,
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
