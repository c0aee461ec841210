"""The run ledger's contract: every key (one function each), who writes it and how, and the small
pointer record (the other documents' records are in :mod:`.records`). Pure: no I/O. docs/ledger.md is
checked against ``RULES`` and the records by the tests.

Layout under the run prefix::

    spec.json  agent/grid-resume-agent.pyz  final.json  lease.json  latest.json
    manifests/SSSSSS-NNNNNN.json  packs/<sha256>  objects/sha256/<sha256>  rerun-N/ (a whole run)
    sessions/SSSSSS/{boot,session,heartbeat,outcome,launch-attempt,launch,watch,closed}.json
    sessions/SSSSSS/logs/<offset>.log
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from airflow_grid_resume.ledger.errors import ManifestError
from airflow_grid_resume.ledger.manifest import check_sha256, format_version, manifest_name, parse_manifest_name

LOG_OFFSET_DIGITS = 16

SPEC = "spec.json"
AGENT_ZIPAPP = "agent/grid-resume-agent.pyz"
FINAL = "final.json"
LEASE = "lease.json"
DEADLINE = "deadline.json"
POINTER = "latest.json"
MANIFESTS = "manifests"
PACKS = "packs"
OBJECTS = "objects/sha256"
SESSIONS = "sessions"


def manifest(session: int, seq: int) -> str:
    return f"{MANIFESTS}/{manifest_name(session, seq)}"


def pack(sha256: str) -> str:
    return f"{PACKS}/{check_sha256(sha256, 'pack name')}"


def blob(sha256: str) -> str:
    return f"{OBJECTS}/{check_sha256(sha256, 'object name')}"


def session_dir(session: int) -> str:
    return f"{SESSIONS}/{session:06d}"


def session_record(session: int) -> str:
    return f"{session_dir(session)}/session.json"


def boot(session: int) -> str:
    """What the instance's bootstrap found: the python3 it started the agent with, or why none fits."""
    return f"{session_dir(session)}/boot.json"


def heartbeat(session: int) -> str:
    return f"{session_dir(session)}/heartbeat.json"


def outcome(session: int) -> str:
    return f"{session_dir(session)}/outcome.json"


def launch(session: int) -> str:
    return f"{session_dir(session)}/launch.json"


def launch_attempt(session: int) -> str:
    """The session's expiry tag and the last RunInstances attempted for it, written before each attempt."""
    return f"{session_dir(session)}/launch-attempt.json"


def watch(session: int) -> str:
    return f"{session_dir(session)}/watch.json"


def closed(session: int) -> str:
    return f"{session_dir(session)}/closed.json"


def decision(session: int) -> str:
    """The deadline policy's latest decision about the session (``deadline=`` runs only)."""
    return f"{session_dir(session)}/decision.json"


def logs(session: int) -> str:
    return f"{session_dir(session)}/logs"


def log_chunk(session: int, offset: int) -> str:
    return f"{logs(session)}/{offset:0{LOG_OFFSET_DIGITS}d}.log"


def rerun(generation: int) -> str:
    """The prefix of a fresh re-run (``rerun="fresh"``): a whole run, same layout, under this one."""
    return f"rerun-{generation}"


@dataclass(frozen=True)
class Rule:
    """Who writes a key, and with which condition (``once``: If-None-Match; ``cas``: If-Match)."""

    key: str  # as docs/ledger.md spells it
    writers: tuple[str, ...]  # "agent", "airflow"
    how: str  # "once", "cas", "overwrite", "append"


RULES = (
    Rule("spec.json", ("airflow",), "overwrite"),
    Rule("agent/grid-resume-agent.pyz", ("airflow",), "overwrite"),
    Rule("final.json", ("airflow",), "overwrite"),
    Rule("deadline.json", ("airflow",), "once"),
    Rule("lease.json", ("agent", "airflow"), "cas"),
    Rule("latest.json", ("agent", "airflow"), "cas"),
    Rule("manifests/SSSSSS-NNNNNN.json", ("agent", "airflow"), "once"),
    Rule("packs/<64 hex>", ("agent", "airflow"), "overwrite"),
    Rule("objects/sha256/<64 hex>", ("agent", "airflow"), "overwrite"),
    Rule("sessions/SSSSSS/boot.json", ("agent",), "overwrite"),
    Rule("sessions/SSSSSS/session.json", ("agent",), "once"),
    Rule("sessions/SSSSSS/heartbeat.json", ("agent",), "overwrite"),
    Rule("sessions/SSSSSS/logs/<16-digit offset>.log", ("agent",), "append"),
    Rule("sessions/SSSSSS/outcome.json", ("agent",), "once"),
    Rule("sessions/SSSSSS/launch-attempt.json", ("airflow",), "overwrite"),
    Rule("sessions/SSSSSS/launch.json", ("airflow",), "once"),
    Rule("sessions/SSSSSS/watch.json", ("airflow",), "overwrite"),
    Rule("sessions/SSSSSS/closed.json", ("airflow",), "overwrite"),
    Rule("sessions/SSSSSS/decision.json", ("airflow",), "overwrite"),
)


def rule(key: str) -> Rule:
    """The rule of ``key`` as ``RULES`` spells it (``sessions/SSSSSS/outcome.json``)."""
    for r in RULES:
        if r.key == key:
            return r
    raise KeyError(f"no ledger rule for {key!r}")


POINTER_FORMAT_PREFIX = "grid-resume-latest/"
POINTER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Pointer:
    """``latest.json``: the newest committed manifest, written after it (a hint: restore lists from it)."""

    manifest: str
    session: int
    seq: int
    created_at: str = ""

    def to_json(self) -> bytes:
        doc = {
            "format": f"{POINTER_FORMAT_PREFIX}{POINTER_FORMAT_VERSION}",
            "manifest": self.manifest,
            "session": self.session,
            "seq": self.seq,
            "created_at": self.created_at,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def order(self) -> tuple[int, int]:
        return (self.session, self.seq)

    @classmethod
    def from_json(cls, body: bytes) -> Pointer | None:
        """The pointer in ``body``; None when it is not one (it is only a hint). A newer format
        raises UnsupportedFormatError: never guessed at."""
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        try:
            format_version(doc, POINTER, POINTER_FORMAT_PREFIX, POINTER_FORMAT_VERSION)
        except ManifestError:
            return None
        name = doc.get("manifest")
        if not isinstance(name, str):
            return None
        parsed = parse_manifest_name(name)
        if parsed is None:
            return None
        return cls(name, parsed[0], parsed[1], str(doc.get("created_at", "")))
