"""What verify measured about one agent session: plain data, shared by the runner and the verdict."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_grid_resume.agent.progress import parse_progress as parse_protocol_line
from airflow_grid_resume.ledger.records import Outcome

_GRACE = re.compile(r"it has (\d+(?:\.\d+)?) s to save")


@dataclass
class SessionRecord:
    """One agent process, as seen by verify (timestamps are epoch seconds).

    ``started_at``, ``sigterm_at``, ``exited_at`` and ``returncode`` come from the probe that
    wraps the command inside the agent's process group; ``exited_at`` is None when the probe was
    killed with the command (the agent's SIGKILL at the deadline). When the command is a shell that
    died of the SIGTERM, they are the trainer's (the last process of the group to exit). ``outcome`` is the session's
    outcome.json from the ledger (None: the agent wrote none).
    """

    label: str
    session: int | None = None
    planned_offset: float | None = None
    planned_step: float | None = None  # the progress number at which its notice was to be posted
    notice_posted_at: float | None = None
    agent_exit: int | None = None
    agent_ended_at: float | None = None
    outcome: Outcome | None = None
    started_at: float | None = None
    sigterm_at: float | None = None
    exited_at: float | None = None
    returncode: int | None = None
    shell_returncode: int | None = None  # the command's shell, when it died of SIGTERM and the trainer went on
    first_output_at: float | None = None
    progress: list[tuple[float, float]] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    agent_lines: list[str] = field(default_factory=list)
    timed_out: bool = False
    notice_in: float | None = None  # seconds from the notice's posting to its reclaim time
    work_left: float | None = None  # seconds of the reference's work still left when SIGTERM came
    markers: int = 0  # "grid-resume: checkpoint" lines the command printed
    markers_dropped: int = 0  # captures at a marker the agent said it could not commit (torn, written in place)

    @property
    def status(self) -> str:
        if self.timed_out:
            return "timed out"
        return self.outcome.status if self.outcome else "no outcome"

    @property
    def interrupted(self) -> bool:
        """The command got the agent's SIGTERM for a notice while it ran (not verify's own stop)."""
        return self.sigterm_at is not None and self.started_at is not None and not self.timed_out

    @property
    def killed(self) -> bool:
        """SIGTERMed and never exited by itself: the agent killed it at the deadline."""
        return self.interrupted and self.exited_at is None

    @property
    def crashed(self) -> bool:
        """Ended non-zero without any interruption."""
        return self.outcome is not None and self.outcome.status == "failed" and not self.interrupted

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.started_at

    @property
    def ran_before_sigterm(self) -> float | None:
        if not self.interrupted:
            return None
        assert self.sigterm_at is not None and self.started_at is not None
        return self.sigterm_at - self.started_at

    @property
    def ran_before_stop(self) -> float | None:
        """Seconds the command could work: until its SIGTERM or, when it ignored that, until it was
        killed (about when its agent ended)."""
        if not self.interrupted:
            return None
        assert self.sigterm_at is not None and self.started_at is not None
        if self.killed and self.agent_ended_at is not None:
            return self.agent_ended_at - self.started_at
        return self.sigterm_at - self.started_at

    @property
    def grace_seconds(self) -> float | None:
        """What the agent said the command had to exit after SIGTERM (from its log line)."""
        for line in self.agent_lines:
            match = _GRACE.search(line)
            if match:
                return float(match.group(1))
        return None

    @property
    def exit_latency(self) -> float | None:
        """Seconds from SIGTERM to the command's exit."""
        if self.sigterm_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.sigterm_at

    @property
    def first_output_after(self) -> float | None:
        if self.first_output_at is None or self.started_at is None:
            return None
        return self.first_output_at - self.started_at

    @property
    def restored_from(self) -> str | None:
        return self.outcome.restored_from if self.outcome else None

    @property
    def manifest(self) -> str | None:
        return self.outcome.manifest if self.outcome else None

    @property
    def progress_values(self) -> list[float]:
        return [value for _, value in self.progress]

    def progress_by(self, when: float) -> float | None:
        """The highest progress number received up to ``when`` (epoch), or None."""
        values = [value for at, value in self.progress if at <= when]
        return max(values) if values else None


def parse_progress(line: str, pattern: re.Pattern[str]) -> float | None:
    """The progress number in an output line (the regex's first group), or None."""
    match = pattern.search(line)
    if not match:
        return None
    try:
        return float(match.group(1) if match.groups() else match.group(0))
    except (ValueError, IndexError):
        return None


def progress_reader(regex: str | None) -> Callable[[str], float | None]:
    """What reads a progress number from a line: the protocol (``grid-resume: progress DONE[/TOTAL]``,
    docs/agent.md) or, when given, the user's ``--progress-regex`` (its first group)."""
    if regex:
        pattern = re.compile(regex)
        return lambda line: parse_progress(line, pattern)

    def read(line: str) -> float | None:
        found = parse_protocol_line(line)
        return None if found is None else float(found.done)

    return read
