"""Which launch to try next for one session: one planner for the worker's first round and the capacity
trigger's rounds, pure (no I/O, no clock of its own), tested without a server.

The rule that keeps one instance per session: an attempt whose answer is unknown (a 5xx, a read
timeout, a dropped connection: EC2 may have launched it) is retried, with the same ClientToken,
before any other (type, zone) pair is tried, in this round and the next. The last attempt is also
recorded in the ledger before it is made (``sessions/N/launch-attempt.json``), so a planner started
after a crash replays it first: EC2 answers a replayed token with the instance it launched, if any.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from airflow_grid_resume.ec2.launch import (
    CAPACITY,
    FATAL,
    ON_DEMAND,
    SPOT,
    THROTTLE,
    TRANSIENT,
    UNSUPPORTED,
    FallbackPolicy,
    Pair,
    backoff_delay,
    client_token,
)
from airflow_grid_resume.ledger.records import Record
from airflow_grid_resume.spot.placement import (
    WAIT,
    MarketChoice,
    MarketDecision,
    MarketView,
    RunState,
    fallback_choice,
    order_pairs,
)

# Retries of an attempt with an unknown answer within one round (1, 2, 4, 8 s), before the round ends;
# the next round starts with the same attempt again.
TRANSIENT_RETRIES = 4

# A ``deadline=`` run's policy (run/deadline.py ``LaunchChooser``): (the usable pairs, this round's spot answers by
# pair key, seconds waited) -> (market: "spot", "on-demand" or WAIT, pair keys to try first, the decision's record
# when it changed). It replaces the market choice (``choice``); the order within a market stays ``order_pairs``.
Chooser = Callable[[Sequence[Pair], Mapping[str, bool | None], float], tuple[str, tuple[str, ...], Record | None]]


@dataclass(frozen=True)
class Attempt:
    """One RunInstances of one session: a pair, a market, and the token that makes it idempotent."""

    pair: Pair
    market: str
    token: str

    def as_dict(self) -> dict:
        doc = {
            "instance_type": self.pair.instance_type,
            "subnet_id": self.pair.subnet_id,
            "zone": self.pair.zone,
            "lifecycle": self.market,
            "token": self.token,
        }
        if self.pair.region:
            doc["region"] = self.pair.region
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> Attempt:
        pair = Pair(str(doc["instance_type"]), str(doc["subnet_id"]), str(doc["zone"]), str(doc.get("region") or ""))
        return cls(pair, str(doc["lifecycle"]), str(doc["token"]))


# What the caller does after an attempt failed.
NEXT_PAIR = "next-pair"  # capacity: try the next pair of this round
RETRY_SAME = "retry-same"  # unknown answer: retry this very attempt after ``transient_delay``
END_ROUND = "end-round"  # throttled, or an unknown answer that stays unknown: back off, then a new round
GIVE_UP = "give-up"  # an error waiting cannot fix


class LaunchPlanner:
    """Rounds of attempts over every allowed pair, with backoff, cool-down and on-demand fallback; the order
    within a round is ``spot.placement.order_pairs`` (offerings, the fleet record, the run's state)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        run_uri: str,
        session: int,
        policy: FallbackPolicy | None = None,
        interruptions: int = 0,
        cool_down: float = 300.0,
        backoff_base: float = 15.0,
        backoff_max: float = 300.0,
        replay: Attempt | None = None,
        rng: random.Random | None = None,
        record: dict | None = None,
        run_state: RunState | None = None,
        offered: set[tuple[str, str]] | None = None,
        choice: MarketChoice | None = None,
        chooser: Chooser | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.record = record
        self.run_state = run_state or RunState()
        self.offered = offered
        self.unsupported: dict[str, str] = {}  # pair key -> EC2's code, for pairs answered Unsupported
        self.run_uri = run_uri
        self.session = session
        self.policy = policy or FallbackPolicy()
        self.choice = choice or fallback_choice(self.policy)
        self.interruptions = interruptions
        self.cool_down = cool_down
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng or random.Random(f"{run_uri}:{session}")
        self.pending = replay  # an attempt whose answer is unknown: always tried first
        self.failed_at: dict[str, float] = {}
        self.failures_in_a_row = 0
        self.rounds = 0
        self._tries = 0  # retries of the pending attempt in this round
        self._throttled = False
        self.chooser = chooser
        self.answers: dict[str, bool | None] = {}  # this round's spot answers (the chooser's knowledge)
        self.chosen: str | None = None  # the chooser's market for this round
        self.decisions: list[Record] = []  # decisions to record, in order (the launcher writes them)

    def ordered(self, market: str, now: float, first: Pair | None = None) -> list[Pair]:
        """The pairs in the order to try them on ``market`` now: the record, the run's state, offerings and
        cool-downs (``order_pairs``)."""
        return order_pairs(
            self.pairs,
            market=market,
            record=self.record,
            run=self.run_state,
            offered=self.offered,
            unsupported=self.unsupported,
            failed_at=self.failed_at,
            now=now,
            cool_down=self.cool_down,
            first=first,
        )

    def usable(self) -> list[Pair]:
        """The pairs still worth a try in this session: offered, and not answered Unsupported."""
        return order_pairs(self.pairs, market=SPOT, offered=self.offered, unsupported=self.unsupported, cool_down=0)

    def decide(self, waited_seconds: float, now: float = 0.0) -> MarketDecision:
        """The market of the next round (the market choice's seam), over the pairs in spot order."""
        ordered = self.ordered(SPOT, now)
        view = MarketView(
            ordered, self.failures_in_a_row, self.interruptions, waited_seconds, self.record, self.run_state
        )
        return self.choice(view)

    def market(self, waited_seconds: float) -> str:
        if self.chooser is not None and self.chosen is not None:
            return self.chosen
        return self.decide(waited_seconds).market

    def fallback_reason(self, waited_seconds: float) -> str:
        if self.chooser is not None:
            return "the deadline policy's decision"
        return self.decide(waited_seconds).reason

    def attempt(self, pair: Pair, market: str) -> Attempt:
        return Attempt(pair, market, client_token(self.run_uri, self.session, pair, market))

    def round(self, now: float, waited_seconds: float) -> list[Attempt]:
        """The attempts of the next round, in order: the pending one first (alone: until its answer is
        known no other pair may be tried), else every pair, those not just failed first."""
        self._tries = 0
        self._throttled = False
        if self.pending is not None:
            return [self.pending]
        if self.chooser is not None:
            self.answers = {}
            return self._chosen(now, waited_seconds)
        decision = self.decide(waited_seconds, now)
        if decision.market == WAIT:
            return []
        ordered = self.ordered(decision.market, now, first=decision.pool)
        return [self.attempt(p, decision.market) for p in ordered]

    def _chosen(self, now: float, waited_seconds: float) -> list[Attempt]:
        assert self.chooser is not None
        market, first, record = self.chooser(self.usable(), dict(self.answers), waited_seconds)
        self.chosen = market
        if record is not None:
            self.decisions.append(record)
        if market == WAIT:
            return []
        ordered = self.ordered(market, now)
        if market == SPOT:
            ordered = [p for p in ordered if p.key not in self.answers]
            ordered = [p for p in ordered if p.key in first] + [p for p in ordered if p.key not in first]
        return [self.attempt(p, market) for p in ordered]

    def follow_up(self, now: float, waited_seconds: float) -> list[Attempt]:
        """A deadline= round whose spot attempts found no capacity: the policy again, knowing that; on-demand
        in this same round when it says so (nothing more otherwise)."""
        if self.chooser is None or self.chosen != SPOT or self.pending is not None:
            return []
        attempts = self._chosen(now, waited_seconds)
        return attempts if self.chosen == ON_DEMAND else []

    def before(self, attempt: Attempt) -> None:
        """Called before the request is sent: until an answer says otherwise, its result is unknown."""
        self.pending = attempt

    def launched(self, attempt: Attempt) -> None:
        self.pending = None

    def failed(self, attempt: Attempt, kind: str, now: float) -> str:
        """What to do after ``attempt`` failed with an error of ``kind`` (ec2.launch.classify_error)."""
        if kind == TRANSIENT:
            self._tries += 1
            return RETRY_SAME if self._tries <= TRANSIENT_RETRIES else END_ROUND
        self.pending = None  # a definitive answer: EC2 launched nothing for this token
        if kind == CAPACITY:
            if attempt.market == SPOT:
                self.answers[attempt.pair.key] = False
            self.failed_at[attempt.pair.key] = now
            return NEXT_PAIR
        if kind == UNSUPPORTED:  # not offered in that zone: never again in this session; the run goes on
            self.unsupported[attempt.pair.key] = attempt.pair.zone
            return NEXT_PAIR if self.usable() else GIVE_UP
        if kind == THROTTLE:
            self._throttled = True
            return END_ROUND
        return GIVE_UP if kind == FATAL else END_ROUND

    def transient_delay(self) -> float:
        """Before retrying an attempt whose answer was unknown: 1, 2, 4, 8 s."""
        return float(2 ** max(0, self._tries - 1))

    def end_round(self) -> float:
        """The round found nothing: the delay before the next one (exponential, capped, jittered)."""
        self.rounds += 1
        if not self._throttled and self.pending is None:
            self.failures_in_a_row += 1
        return backoff_delay(self.rounds, base=self.backoff_base, cap=self.backoff_max, rng=self.rng)


__all__ = ["END_ROUND", "GIVE_UP", "NEXT_PAIR", "RETRY_SAME", "SPOT", "WAIT", "Attempt", "Chooser", "LaunchPlanner"]
