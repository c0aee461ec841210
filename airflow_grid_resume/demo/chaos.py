"""The demo's chaos schedule: what the spot market does to the run, and when.

Pure: the driver feeds it what it observes (which session runs, how far training got) and carries
out the actions it returns against the local spot cloud. Progress-based, not time-based, so the
schedule hits the same training steps on a fast machine and a slow one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WITHHOLD = "withhold"  # no capacity for a while before the first launch
NOTICE = "interrupt"  # a spot interruption with the two-minute notice (shortened here)
HARD_LOSS = "lose"  # the instance vanishes with no notice at all


@dataclass(frozen=True)
class ChaosEvent:
    kind: str
    session: int = 0  # the session it hits (0: before the first launch)
    at_step: int = 0  # the training step the session must have reached
    seconds: float = 0.0  # how long capacity is withheld

    def describe(self) -> str:
        if self.kind == WITHHOLD:
            return f"no spot capacity for the first {self.seconds:.0f} s"
        what = "interruption with a notice" if self.kind == NOTICE else "hard loss, no notice"
        return f"{what} in session {self.session} after step {self.at_step}"


@dataclass
class ChaosSchedule:
    events: list[ChaosEvent]
    done: set[int] = field(default_factory=set)

    @classmethod
    def default(cls, steps: int, withhold_seconds: float = 20.0) -> ChaosSchedule:
        """Withhold capacity once, interrupt session 1 with a notice at 30 % of the training and
        lose session 2 without one at 65 %: three sessions, two kinds of interruption."""
        return cls(
            [
                ChaosEvent(WITHHOLD, seconds=withhold_seconds),
                ChaosEvent(NOTICE, session=1, at_step=int(steps * 0.30)),
                ChaosEvent(HARD_LOSS, session=2, at_step=int(steps * 0.65)),
            ]
        )

    def due(self, session: int, step: int) -> list[ChaosEvent]:
        """The events to carry out now that ``session`` has reached ``step``; each happens once."""
        ready = []
        for index, event in enumerate(self.events):
            if index in self.done or event.kind == WITHHOLD:
                continue
            if event.session == session and step >= event.at_step:
                self.done.add(index)
                ready.append(event)
        return ready

    def withholding(self) -> ChaosEvent | None:
        return next((e for e in self.events if e.kind == WITHHOLD), None)

    @property
    def interruptions(self) -> int:
        return sum(1 for e in self.events if e.kind in (NOTICE, HARD_LOSS))

    def finished(self) -> bool:
        return all(i in self.done for i, e in enumerate(self.events) if e.kind != WITHHOLD)
