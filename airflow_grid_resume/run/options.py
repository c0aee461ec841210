"""The run's parameters as the DAG author gave them, checked in one place (as ``LaunchSpec`` checks the launch's).

``GridRunOperator`` builds one :class:`RunOptions` when the DAG is parsed: every parameter that is wrong is named in
one ValueError with what it must be, so a DAG file with two mistakes shows both at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_grid_resume.policy import POLICIES

RERUN_CHOICES = ("resume", "fresh")
LIVE_OUTPUT_CHOICES = ("sqs", "s3")


def seconds(value: timedelta | float | int | None) -> float | None:
    """A duration given as a timedelta or a number of seconds, in seconds (None stays None)."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class RunOptions:
    """The parameters of a run that are not the launch's (``LaunchSpec``), durations in seconds."""

    command: str | tuple[str, ...]
    artifacts_uri: str
    max_interruptions: int = 20
    capacity_wait: float | None = 6 * 3600.0
    max_run: float | None = 2 * 86400.0
    interruption_retry_delay: float = 0.0
    rerun: str = "resume"
    live_output: str = "sqs"
    keep_checkpoints: int | None = 3
    on_demand_prices: Mapping[str, float] = field(default_factory=dict)
    deadline: Any = None  # a datetime, a timedelta from the run's first try, or a (templated) ISO string
    expected_runtime: float | None = None
    expected_changeover: float = 720.0  # seconds a session start costs until the run has measured one
    deadline_policy: str = "default"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        found = []
        if not self.command or (isinstance(self.command, str) and not self.command.strip()):
            found.append("command must not be empty: give the training command, e.g. 'python train.py'")
        if not isinstance(self.artifacts_uri, str) or not self.artifacts_uri.startswith("s3://"):
            found.append(f"artifacts_uri must be an s3:// URI where run ledgers live, got {self.artifacts_uri!r}")
        if self.max_interruptions < 0:
            found.append(f"max_interruptions must be 0 or more, got {self.max_interruptions}")
        for name in ("capacity_wait", "max_run"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                found.append(f"{name} must be positive, got {value:g} s")
        if self.interruption_retry_delay < 0:
            found.append(f"interruption_retry_delay must be 0 or more, got {self.interruption_retry_delay:g} s")
        if self.rerun not in RERUN_CHOICES:
            found.append(f"rerun must be one of {', '.join(map(repr, RERUN_CHOICES))}, got {self.rerun!r}")
        if self.live_output not in LIVE_OUTPUT_CHOICES:
            choices = ", ".join(map(repr, LIVE_OUTPUT_CHOICES))
            found.append(f"live_output must be one of {choices}, got {self.live_output!r}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            found.append(f"keep_checkpoints must be 1 or more (None keeps all), got {self.keep_checkpoints!r}")
        for type_, price in self.on_demand_prices.items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                found.append(f"on_demand_prices[{type_!r}] must be a USD-per-hour number, got {price!r}")
        found += deadline_problems(self.deadline, self.expected_runtime)
        if self.deadline_policy not in POLICIES:
            found.append(
                f"deadline_policy must be one of {', '.join(map(repr, POLICIES))}, got {self.deadline_policy!r}"
            )
        if self.expected_changeover <= 0:
            found.append(f"expected_changeover must be positive, got {self.expected_changeover:g} s")
        return found


def deadline_problems(deadline: Any, expected_runtime: float | None) -> list[str]:
    """What is wrong with ``deadline=`` and ``expected_runtime=`` as given (a template is checked once rendered:
    ``run/deadline.py``)."""
    found = []
    if expected_runtime is not None and expected_runtime <= 0:
        found.append(f"expected_runtime must be positive, got {expected_runtime:g} s")
    if deadline is None:
        return found
    if expected_runtime is None:
        found.append(
            "deadline= needs expected_runtime=: the hours of training the command needs on the chosen hardware "
            "without interruptions, e.g. expected_runtime=timedelta(hours=5)"
        )
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None or deadline.utcoffset() is None:
            found.append(f"deadline must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), got {deadline}")
    elif isinstance(deadline, timedelta):
        if deadline.total_seconds() <= 0:
            found.append(f"deadline as a timedelta from the run's first try must be positive, got {deadline}")
    elif isinstance(deadline, str):
        if not deadline.strip():
            found.append("deadline must not be an empty string")
    else:
        found.append(
            "deadline must be a timezone-aware datetime, a timedelta from the run's first try, or a template "
            f"rendering to an ISO datetime, got {type(deadline).__name__} {deadline!r}"
        )
    return found
