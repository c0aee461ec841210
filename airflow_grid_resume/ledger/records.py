"""Typed records for the ledger's JSON documents (the manifest and the pointer have their own
modules): one dataclass per document, with its ``format``, to and from JSON. Pure: no I/O.

Every record is written as ``{"format": "grid-resume-NAME/N", ...}``. Reading follows one rule for
all of them (``manifest.format_version``): a newer ``N`` than this code knows raises
``UnsupportedFormatError`` (never guessed at); a document without ``format`` is version 1 (written
before documents carried one). Fields a record does not know are kept in ``extra`` and written back
unchanged, so an older reader that rewrites a document never drops what a newer writer added.
A known field of the wrong type is a ``RecordError`` naming the key and the field.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.compat import REQUIRED, record_dataclass, type_hints
from airflow_grid_resume.ledger.errors import ManifestError
from airflow_grid_resume.ledger.manifest import format_version

FORMAT_PREFIX = "grid-resume-"

R = TypeVar("R", bound="Record")


class RecordError(ManifestError):
    """A ledger document is not what its format says (not an object, or a field of the wrong type)."""


@record_dataclass
class Record:
    """Base of every ledger record: the format, the JSON form, the unknown fields kept."""

    NAME: ClassVar[str]  # the format's name: grid-resume-NAME/N
    VERSION: ClassVar[int] = 1  # the newest version this code writes and reads
    KEY: ClassVar[str]  # the key as docs/ledger.md spells it (for messages and the rules)
    OMIT_NONE: ClassVar[tuple[str, ...]] = ()  # fields left out of the JSON when None

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def format(cls) -> str:
        return f"{FORMAT_PREFIX}{cls.NAME}/{cls.VERSION}"

    def to_dict(self) -> dict[str, Any]:
        """The document as stored: unknown fields first, then every known one, and the format."""
        doc = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.OMIT_NONE:
                doc.pop(f.name, None)
                continue
            doc[f.name] = value
        doc["format"] = self.format()
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls: type[R], doc: Any, *, name: str | None = None) -> R:
        """The record in ``doc`` (a parsed JSON object), checked against its format and field types."""
        name = name or cls.KEY
        if not isinstance(doc, dict):
            raise RecordError(f"{name} is not a JSON object")
        if "format" in doc:
            format_version(doc, name, f"{FORMAT_PREFIX}{cls.NAME}/", cls.VERSION)
        types, required = _fields(cls)
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in doc.items():
            expected = types.get(key)
            if expected is not None:
                known[key] = expected.check(value, name, key)
            elif key != "format":
                extra[key] = value
        missing = [f for f in required if f not in known]
        if missing:
            raise RecordError(f"{name} lacks {', '.join(missing)}")
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls: type[R], body: bytes, *, name: str | None = None) -> R:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(f"{name or cls.KEY} is not valid JSON: {exc}") from exc
        return cls.from_dict(doc, name=name)


@dataclass(frozen=True)
class _FieldType:
    """A known field's JSON types, worked out once per record class (``from_json`` runs per read)."""

    hint: Any
    exact: frozenset[type]  # the types json.loads gives that are taken as they are
    to_float: bool  # an integer is taken as a number
    anything: bool

    @classmethod
    def of(cls, hint: Any) -> _FieldType:
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
        bases = {typing.get_origin(o) or o for o in options}
        return cls(hint, frozenset(bases), float in bases and int not in bases, Any in bases)

    def check(self, value: Any, name: str, key: str) -> Any:
        """``value`` if it has the field's JSON type (an int is a float, a bool is not a number)."""
        kind = type(value)
        if kind in self.exact or self.anything:
            return value
        if self.to_float and kind is int:
            return float(value)
        if kind is not bool:  # a subclass, from code rather than json.loads (a bool is never a number)
            for base in self.exact:
                if base is float and isinstance(value, (int, float)):
                    return float(value)
                if isinstance(value, base):
                    return value
        raise RecordError(f"{name}: field {key!r} is {value!r}, not {_describe(self.hint)}")


_FIELDS: dict[type, tuple[dict[str, _FieldType], tuple[str, ...]]] = {}


def _fields(cls: type) -> tuple[dict[str, _FieldType], tuple[str, ...]]:
    """A record class's known fields with their types, and the required ones (computed once)."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
        required = tuple(
            f.name
            for f in fields
            if f.default in (dataclasses.MISSING, REQUIRED) and f.default_factory is dataclasses.MISSING
        )
        found = _FIELDS[cls] = ({f.name: _FieldType.of(hints[f.name]) for f in fields}, required)
    return found


try:  # X | Y at runtime (3.10+)
    from types import UnionType as _UnionType  # novm (3.10+ only)
except ImportError:  # pragma: no cover
    # Python 3.9 has no types.UnionType (X | Y at runtime): typing.Union stands in; the checker runs on 3.10+.
    _UnionType = typing.Union  # type: ignore[assignment,misc]


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    names.update({dict: "an object", type(None): "null"})
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
    return " or ".join(names.get(typing.get_origin(o) or o, str(o)) for o in options)


# -- the agent's documents ------------------------------------------------------------------------


# Boot.problem: no python3 >= 3.9 on the image (an image problem: no retry on the same image can help).
BOOT_NO_PYTHON = "no_usable_python"
# Boot.problem: the agent zipapp or spec.json in S3 is not the one the session was launched with (ec2/bootpy.py).
BOOT_TAMPERED = ("tampered_agent", "tampered_spec")


@record_dataclass
class Boot(Record):
    """``sessions/SSSSSS/boot.json``: written by the instance's bootstrap (ec2/bootstrap.py) before the agent
    starts: the python3 it chose (``python``, ``python_version``) or, when none fits, ``problem`` and
    ``message`` (what to fix). ``candidates``: every python3 it looked at, with its version."""

    NAME = "boot"
    KEY = "sessions/SSSSSS/boot.json"
    OMIT_NONE = ("python", "python_version", "problem", "message")

    session: int
    python: str | None = None
    python_version: str | None = None
    problem: str | None = None
    message: str | None = None
    candidates: list[str] = field(default_factory=list)
    at: str = ""


@record_dataclass
class SessionStart(Record):
    """``sessions/SSSSSS/session.json``: creating it (once) claims the session number."""

    NAME = "session"
    KEY = "sessions/SSSSSS/session.json"

    session: int
    agent_id: str = ""
    host: str = ""
    pid: int | None = None
    instance_id: str = ""
    started_at: str = ""
    command: list[str] = field(default_factory=list)
    agent_version: str = ""


@record_dataclass
class Heartbeat(Record):
    """``sessions/SSSSSS/heartbeat.json``: overwritten on every beat and state change.
    ``progress``: ``{"done": N, "total": T}`` (the progress protocol), absent before any line.
    ``transfer``: ``{"uploaded_bytes", "downloaded_bytes"}`` so far, as in the outcome (a lost session's only count)."""

    NAME = "heartbeat"
    KEY = "sessions/SSSSSS/heartbeat.json"
    OMIT_NONE = ("progress", "log_interval", "transfer")

    session: int
    seq: int = 0
    time: str = ""
    epoch: float | None = None
    state: str = ""
    log_bytes: int = 0
    last_manifest: str | None = None
    notice: dict[str, Any] | None = None
    interval: float | None = None
    log_interval: float | None = None
    progress: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None


# Outcome.cause: the checkpoint did not fit on the instance's disk while restoring (no retry can help).
CAUSE_DISK_FULL = "disk_full"
# Outcome.cause (set by the Airflow side from boot.json): the image has no usable python3 (no retry can help).
CAUSE_IMAGE = "image"
# Outcome.cause (set by the Airflow side): the bootstrap refused an agent or spec changed after upload (no retry).
CAUSE_TAMPERED = "tampered"


@record_dataclass
class Outcome(Record):
    """``sessions/SSSSSS/outcome.json``: how the session ended, written once by its agent.
    ``progress``: ``{"first": N1, "last": N2, "total": T}``, absent if the session printed none.
    ``set_aside``: ``{"count": N, "dirs": [...], "paths": [...]}``, the local files restore found
    differing from the checkpoint and kept (the first 20 paths), absent when there were none.
    ``cause``: set when the failure is not the script's (``disk_full``: the restore filled the disk).
    ``restore_fallback``: when the newest checkpoint did not verify and an older one was restored,
    ``{"newest", "restored", "newest_step", "restored_step", "steps_lost"}`` (steps null when the
    manifests record none); absent otherwise.
    ``transfer``: ``{"uploaded_bytes": N, "downloaded_bytes": N}``, the checkpoint bytes the session moved to and
    from the ledger (what a session in another region than the bucket pays transfer for); absent from older agents."""

    NAME = "outcome"
    KEY = "sessions/SSSSSS/outcome.json"
    OMIT_NONE = ("progress", "hint", "set_aside", "restore_fallback", "cause", "lease_held_by", "transfer")

    session: int
    status: str
    exit_code: int | None = None
    clean: bool = False
    reason: str = ""
    hint: str | None = None
    warnings: list[str] = field(default_factory=list)
    notice: dict[str, Any] | None = None
    manifest: str | None = None
    restored_from: str | None = None
    restore_fallbacks: list[dict[str, Any]] = field(default_factory=list)
    restore_fallback: dict[str, Any] | None = None
    cause: str | None = None  # a failure that is not the script's: CAUSE_DISK_FULL
    started_at: str | None = None
    ended_at: str | None = None
    tail: list[str] = field(default_factory=list)
    agent_exit_code: int | None = None
    progress: dict[str, Any] | None = None
    set_aside: dict[str, Any] | None = None
    lease_held_by: int | None = None  # the live session whose lease refused this one (agent exit 3)
    transfer: dict[str, Any] | None = None

    def set_aside_note(self) -> str | None:
        """One line for the task log when restore kept local files that differed from the checkpoint."""
        if not self.set_aside:
            return None
        dirs = ", ".join(str(d) for d in self.set_aside.get("dirs") or []) or "the workdir"
        return (
            f"session {self.session}: restore found {self.set_aside.get('count')} local file(s) differing from the "
            f"checkpoint and kept them under {dirs} in the workdir (synced with it; nothing was overwritten)"
        )


@record_dataclass
class Lease(Record):
    """``lease.json``: which agent holds the run, until ``expires_at`` (epoch seconds) unless released."""

    NAME = "lease"
    KEY = layout.LEASE
    OMIT_NONE = ("released_by",)

    agent_id: str = ""
    host: str = ""
    pid: int | None = None
    instance_id: str = ""
    session: int | None = None
    acquired_at: float | None = None
    renewed_at: float | None = None
    expires_at: float = 0.0
    released: bool = False
    released_by: str | None = None  # set when the Airflow side released it for an agent known dead

    def held(self, now: float) -> bool:
        """Whether the lease still keeps every other agent out: not released and not expired."""
        return not self.released and self.expires_at > now

    def released_for_dead(self, session: int, instance_id: str) -> Lease | None:
        """The Airflow side's release of a lease whose holder is known dead (its instance is gone), to
        write with If-Match on the ETag this was read with; None when it is released already or held
        by another session or instance (a live agent's lease is never touched)."""
        if self.released or (self.session != session and self.instance_id != instance_id):
            return None
        return dataclasses.replace(self, released=True, released_by=f"airflow: instance {instance_id} is gone")


# -- the Airflow side's documents -----------------------------------------------------------------


@record_dataclass
class Spec(Record):
    """``spec.json``: what the bootstrap runs (``agent_args``, ``command``, ``--live-queue``) and the run's budgets."""

    NAME = "spec"
    KEY = layout.SPEC
    OMIT_NONE = ("live_queue", "s3_write")

    command: list[str]
    agent_args: list[str] = field(default_factory=list)
    run_uri: str = ""
    budgets: dict[str, Any] = field(default_factory=dict)
    live_queue: str | None = None  # the run's live-output queue URL (ledger/live.py), None: output via S3 only
    s3_write: dict[str, str] | None = None  # what every write carries (ledger/writeoptions.py), None: nothing


@record_dataclass
class Final(Record):
    """``final.json``: how the run ended for good, in which session."""

    NAME = "final"
    KEY = layout.FINAL

    status: str
    session: int | None = None
    reason: str = ""
    at: float | None = None


@record_dataclass
class Deadline(Record):
    """``deadline.json``: the run's deadline as its first try resolved it (epoch seconds), so every later try and
    triggerer measures against the same instant, and the hours of training the DAG author expected."""

    NAME = "deadline"
    KEY = layout.DEADLINE

    deadline_at: float
    expected_hours: float
    first_started_at: float
    given: str = ""  # what the DAG author gave, as text (a datetime, a timedelta, a rendered template)


@record_dataclass
class LaunchAttempt(Record):
    """``sessions/SSSSSS/launch-attempt.json``: the session's expiry tag, fixed before its first launch
    attempt, and the last RunInstances attempted (replayed, with its token, by a later launcher)."""

    NAME = "launch-attempt"
    KEY = "sessions/SSSSSS/launch-attempt.json"
    OMIT_NONE = ("phase", "rounds", "answers", "next_try_in", "lifecycle")  # absent while no round has ended

    session: int
    expires_at: str
    attempt: dict[str, Any] | None = None
    at: float | None = None
    phase: str | None = None  # "trying" (before an attempt) or "backing-off" (a round found nothing)
    rounds: int | None = None
    answers: list[dict[str, Any]] | None = None  # EC2's answer per pair tried in the last round that ended
    next_try_in: float | None = None  # seconds from ``at``, while backing off
    lifecycle: str | None = None


@record_dataclass
class Launch(Record):
    """``sessions/SSSSSS/launch.json``: the instance the session runs on and what it costs an hour."""

    NAME = "launch"
    KEY = "sessions/SSSSSS/launch.json"
    OMIT_NONE = ("region", "resolved_types", "bucket_region")

    instance_id: str
    instance_type: str | None = None
    zone: str | None = None
    subnet_id: str | None = None
    lifecycle: str | None = None  # "spot" or "on-demand"
    spot_price: float | None = None
    on_demand_price: float | None = None
    launched_at: float | None = None
    waited_seconds: float | None = None
    region: str | None = None  # the instance's region, when the run has several (placements)
    resolved_types: list[str] | None = None  # what instance_requirements resolved to
    bucket_region: str | None = None  # the run's bucket's region, when the run has several (placements)


@record_dataclass
class Watch(Record):
    """``sessions/SSSSSS/watch.json``: how far the task log has the output (``log_offset``), and, by
    being rewritten, proof that a trigger watches (the agent compares its ETag, never ``at``)."""

    NAME = "watch"
    KEY = "sessions/SSSSSS/watch.json"
    OMIT_NONE = ("stop",)

    log_offset: int = 0
    at: float | None = None
    # A planned stop the Airflow side asks for (a deadline= run going back to spot): ``{"reason", "at"}``. The agent
    # reads it where it reads the ETag and stops the session as on a notice (agent/monitors/events.py).
    stop: dict[str, Any] | None = None


@record_dataclass
class Decision(Record):
    """``sessions/SSSSSS/decision.json``: the deadline policy's latest decision about session SSSSSS (where it was
    taken, the action, the pool, why) and what it predicted, for the run view and the summary."""

    NAME = "decision"
    KEY = "sessions/SSSSSS/decision.json"

    action: str  # "spot", "on-demand", "wait", or "stop" (a planned stop of an on-demand session: back to spot in
    # ``pool``, or to wait for spot without one)
    at: float
    point: str = ""  # "launch", "capacity", "watch", "notice"
    pool: str | None = None
    reason: str = ""
    commit: bool = False  # on-demand to the end: later decisions keep it
    deadline_at: float | None = None
    predicted_finish: float | None = None
    ahead_hours: float | None = None  # progress against the straight line to the deadline (negative: behind)
    work_hours: float | None = None
    progress_hours: float | None = None
    changeover_hours: float | None = None


@record_dataclass
class Closed(Record):
    """``sessions/SSSSSS/closed.json``: how the Airflow side saw the session end (the only record of a
    lost one). ``unwatched``: closed by a later try, from the outcome, because no try watched it."""

    NAME = "closed"
    KEY = "sessions/SSSSSS/closed.json"
    OMIT_NONE = ("unwatched",)

    status: str | None = None
    reason: str | None = None
    instance_id: str | None = None
    at: float | None = None
    unwatched: bool | None = None


# -- where each record lives ----------------------------------------------------------------------

SESSION_RECORDS: dict[type[Record], typing.Callable[[int], str]] = {
    Boot: layout.boot,
    SessionStart: layout.session_record,
    Heartbeat: layout.heartbeat,
    Outcome: layout.outcome,
    LaunchAttempt: layout.launch_attempt,
    Launch: layout.launch,
    Watch: layout.watch,
    Closed: layout.closed,
    Decision: layout.decision,
}
RUN_RECORDS: dict[type[Record], str] = {
    Spec: layout.SPEC,
    Final: layout.FINAL,
    Lease: layout.LEASE,
    Deadline: layout.DEADLINE,
}
ALL = (*RUN_RECORDS, *SESSION_RECORDS)


def as_dict(record: Record | None) -> dict[str, Any] | None:
    """``record``'s JSON form (None for None): what the pure view models (summary, ui/model) take, so
    their inputs are the documents as stored and their tests plain dicts."""
    return None if record is None else record.to_dict()


def record_key(cls: type[Record], session: int | None = None) -> str:
    """The key (under the run prefix) of ``cls``'s document; session records need ``session``."""
    if cls in RUN_RECORDS:
        return RUN_RECORDS[cls]
    if session is None:
        raise ValueError(f"{cls.KEY} needs a session number")
    return SESSION_RECORDS[cls](session)
