"""A copy of the output a run watch writes into the task log, kept in the remote log while the watch runs.

With ``[logging] remote_logging``, a triggerer uploads a trigger's log file when the trigger ends in it
(``TriggerRunnerSupervisor``, Airflow 3.3): a triggerer that is SIGKILLed (OOM kill, lost node, evicted pod)
uploads nothing, and the lines it wrote stay on a disk that may be gone. A grid run's watch lasts as long as the
training, days, so that is most of the output. So the watch also writes the lines it logged into an object of its
own beside the try's log in the remote store (``attempt=N.log.trigger.watch-...``; Airflow's remote readers list
every object under the try's log path, so the UI shows it), each time it records its log offset in
``watch.json``: whatever a killed triggerer wrote up to the offset its successor restarts from is in the remote
log. A watch that ends in its triggerer (its event, or a cancellation on a stop) deletes its copy: Airflow then
uploads the whole trigger log, and the lines would show twice.

Only Airflow's S3 remote logging (``S3RemoteLogIO``) is handled; with any other, or none, this does nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

# The copy is rewritten whole at each offset save (S3 has no append): past this size the watch starts a new part,
# so that neither the PUTs nor the lines kept in memory grow with the length of the run.
PART_BYTES = 1 << 20
# The logger name the copy's lines carry: the watch's own, as in the trigger log.
LOGGER = "airflow_grid_resume.triggers.run.RunWatchTrigger"


def log_line(event: str, at: datetime) -> str:
    """One line as Airflow's trigger log files hold it (structlog JSON), which its log readers parse."""
    stamp = at.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps({"timestamp": stamp, "level": "info", "event": event, "logger": LOGGER}) + "\n"


def copy_location(remote_base: str, log_path: str, session: int, watch_id: str, part: int) -> str:
    """Where a watch's copy goes: beside the try's log (``log_path``, relative to the log folder), under a name
    that starts like the try's log, so that the remote reader lists it with the try's other logs."""
    return f"{remote_base.rstrip('/')}/{log_path}.trigger.watch-session{session}-{watch_id}-{part:04d}.log"


def s3_remote_log_io() -> Any | None:
    """Airflow's configured S3 remote log IO (its connection, encryption and ACL settings), or None when remote
    logging is off or goes elsewhere."""
    from airflow.configuration import conf

    if not conf.getboolean("logging", "remote_logging", fallback=False):
        return None
    from airflow.logging_config import get_remote_task_log

    io = get_remote_task_log()
    if io is None or not str(getattr(io, "remote_base", "")).startswith("s3://") or not hasattr(io, "write"):
        return None
    return io


def try_log_path(task_instance: Any) -> str | None:
    """The try's log path relative to the log folder, rendered as the triggerer renders it (``[logging]
    log_filename_template``); None outside a triggerer (no task instance)."""
    if task_instance is None:
        return None
    from airflow.utils.helpers import log_filename_template_renderer

    return str(log_filename_template_renderer()(ti=task_instance))


class RemoteLogCopy:
    """The lines one watch logged, and their object(s) in the remote log. ``io`` is Airflow's S3 remote log IO
    (``s3_remote_log_io``); ``log_path`` the try's log path."""

    def __init__(self, io: Any, log_path: str, session: int, part_bytes: int = PART_BYTES) -> None:
        self.io = io
        self.log_path = log_path
        self.session = session
        self.part_bytes = part_bytes
        self.watch_id = uuid.uuid4().hex[:8]  # a successor's copy never overwrites its predecessor's
        self.part = 0
        self.lines: list[str] = []
        self.size = 0
        self.written: list[str] = []  # every location this watch wrote
        self.unsaved = False

    def location(self) -> str:
        return copy_location(self.io.remote_base, self.log_path, self.session, self.watch_id, self.part)

    def add(self, event: str, at: datetime | None = None) -> None:
        line = log_line(event, at or datetime.now(timezone.utc))
        self.lines.append(line)
        self.size += len(line)
        self.unsaved = True

    async def save(self) -> None:
        """Write the current part whole (overwriting its previous version); start a new part once it is full."""
        if not self.unsaved:
            return
        location, text = self.location(), "".join(self.lines)
        if not await asyncio.to_thread(self.io.write, text, location, append=False):
            log.warning("could not write the copy of the watch's output to %s", location)  # the next save retries
            return
        self.unsaved = False
        if location not in self.written:
            self.written.append(location)
        if self.size >= self.part_bytes:
            self.part += 1
            self.lines, self.size = [], 0

    async def discard(self) -> None:
        """Delete every object this watch wrote: the triggerer uploads the whole trigger log itself now."""
        if not self.written:
            return
        by_bucket: dict[str, list[str]] = {}
        for location in self.written:
            bucket, key = self.io.hook.parse_s3_url(location)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            await asyncio.to_thread(self.io.hook.delete_objects, bucket, keys)
        self.written = []
