"""One spot session, start to end: lease, restore, run, watch, sync, record the outcome."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume import __version__
from airflow_grid_resume.agent.child import Child, SpawnError, become_subreaper, reap_orphans
from airflow_grid_resume.agent.deadline import (
    group_kill_at,
    group_returncode,
    plan_final_sync,
    seconds_until_reclaim,
)
from airflow_grid_resume.agent.imds import ImdsClient, ImdsDisabled, ImdsUnavailable, resolve_endpoint
from airflow_grid_resume.agent.lease import Lease, acquire_lease
from airflow_grid_resume.agent.livesend import LiveSender, make_sqs_client
from airflow_grid_resume.agent.logship import (
    DEFAULT_DURABLE_INTERVAL,
    DEFAULT_LIVE_INTERVAL,
    DEFAULT_LOG_INTERVAL,
    LogShipper,
    LogSpool,
    SpoolLogHandler,
)
from airflow_grid_resume.agent.markers import Capture, Captures, clear_captures, exit_is_complete
from airflow_grid_resume.agent.monitors import MonitorSettings, discover
from airflow_grid_resume.agent.monitors.events import (
    KILL,
    START_STOP,
    SYNC,
    TIGHTEN,
    StopEvent,
    lease_lost_event,
    planned_stop_event,
    react,
    signal_event,
    unwatched_event,
)
from airflow_grid_resume.agent.monitors.runner import MonitorRunner
from airflow_grid_resume.agent.outcome import FAILED, INTERRUPTED, STOPPED, Classification, classify
from airflow_grid_resume.agent.progress import ProgressTracker
from airflow_grid_resume.agent.restore import Restorer, RestoreResult
from airflow_grid_resume.agent.scan import HashCache, PathFilter
from airflow_grid_resume.agent.session import claim_session, command_env
from airflow_grid_resume.agent.sync import MANIFESTS_PER_SESSION, SyncCancelled, Syncer
from airflow_grid_resume.agent.unwatched import UnwatchedGuard
from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.checkpoints import EXITED, MARKED, manifest_extra, uses_markers
from airflow_grid_resume.ledger.errors import (
    EXIT_AGENT_CRASHED,
    EXIT_LEASE_HELD,
    EXIT_LEDGER_UNAVAILABLE,
    EXIT_SYNC_FAILED,
    AgentError,
    DiskFullError,
    LeaseHeldError,
    NoRestorableCheckpointError,
    UsageError,
    crash_hint,
)
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions

log = logging.getLogger("airflow_grid_resume.agent")

# The lease is renewed when this share of its TTL has passed (120 s of the default 300: a PUT every two
# minutes, and three more minutes of retries before another agent could take the run).
LEASE_RENEW_SHARE = 0.4
# With live output on a queue, heartbeat.json is written every this many beats (the beats between go
# over the queue): the UI's progress is at most a minute old at the defaults.
LIVE_STATUS_BEATS = 2
# How often the agent looks whether the rest of the command's group has exited, once its leader has.
GROUP_POLL = 0.05


@dataclass
class AgentOptions:
    run_uri: str
    workdir: str
    command: list[str]
    session: int | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    sync_interval: float = 300.0
    heartbeat_interval: float = 30.0
    lease_ttl: float = 300.0
    unwatched_timeout: float = 1800.0
    log_interval: float = DEFAULT_LOG_INTERVAL
    live_queue: str | None = None
    live_interval: float = DEFAULT_LIVE_INTERVAL
    durable_log_interval: float = DEFAULT_DURABLE_INTERVAL
    imds_endpoint: str | None = None
    imds_poll: float = 1.0
    imds_timeout: float = 1.0
    no_imds: bool = False
    require_imds: bool = False
    signal_grace: float = 30.0
    sync_reserve: float = 10.0
    min_grace: float = 5.0
    notice_window: float = 120.0
    parallelism: int = 16
    keep_manifests: int = MANIFESTS_PER_SESSION  # of this session's own checkpoints; 0 keeps every one
    region: str | None = None
    passthrough: bool = True
    s3_write: S3WriteOptions = field(default_factory=S3WriteOptions)  # what every write carries (spec's s3_write)


@dataclass(frozen=True)
class Exited:
    """The command ended (the other kind of event the supervisor waits for)."""

    returncode: int


def _utc(epoch: float | None = None) -> str:
    ts = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prepare_workdir(path: str) -> str:
    """Create the workdir if needed and prove it is writable, or say what to fix."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--workdir {path} cannot be created: {exc.strerror}") from exc
    if not os.path.isdir(path):
        raise UsageError(f"--workdir {path} exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".grid-resume-tmp-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--workdir {path} is not writable: {exc.strerror}") from exc
    return path


class Supervisor:
    """Runs one session. ``run()`` returns the agent's exit code; see docs/agent.md."""

    def __init__(self, options: AgentOptions) -> None:
        self.o = options
        self.events: queue.Queue[StopEvent | Exited] = queue.Queue()
        self.agent_id = uuid.uuid4().hex
        self.state = "starting"
        self.session = 0
        self.notice: StopEvent | None = None  # the stop under way, with its reclaim time
        self.instance_id: str | None = None
        self._stop_heartbeat = threading.Event()
        self._beat_now = threading.Event()
        self._sync_cancel = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self.syncer: Syncer | None = None
        self.notice_warnings: list[str] = []  # late notice, checkpoint too large for the window
        self._notice_seen: dict[float, float] = {}  # notice time -> when first seen (monotonic)
        self._child: Child | None = None
        self._lease: Lease | None = None
        # The command's "grid-resume: progress" lines, and its "grid-resume: checkpoint" markers.
        self.progress = ProgressTracker(on_checkpoint=self._on_marker)
        self.captures: Captures | None = None
        self.uses_markers = False  # the run's checkpoints are the marked ones (agent/markers.py)
        self._sync_start = threading.Lock()
        self._said_periodic_off = False
        self.downloaded_bytes = 0  # what the restore fetched from the ledger (the checkpoint it restored)

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> int:
        if not self.o.command:
            raise UsageError("no command given: put the training command after '--'")
        location = parse_s3_uri(self.o.run_uri)
        workdir = prepare_workdir(self.o.workdir)
        ledger = RunLedger(
            make_s3_client(parallelism=self.o.parallelism, region=self.o.region), location, self.o.s3_write
        )
        ledger.check_access()
        imds = self._probe_imds()
        holder = records.Lease(
            agent_id=self.agent_id, host=socket.gethostname(), pid=os.getpid(), instance_id=self.instance_id or ""
        )
        start = records.SessionStart(
            session=0,  # the number claimed
            agent_id=holder.agent_id,
            host=holder.host,
            pid=holder.pid,
            instance_id=holder.instance_id,
            started_at=_utc(),
            command=self.o.command,
            agent_version=__version__,
        )
        try:
            lease = acquire_lease(ledger, holder, ttl=self.o.lease_ttl)
        except LeaseHeldError as exc:
            self._record_refusal(ledger, start, exc)
            raise
        # Every exit from here on releases the lease (the finally below), whatever ends the session.
        state_dir = ""
        previous_handlers: dict = {}
        spool_handler: SpoolLogHandler | None = None
        watcher: MonitorRunner | None = None
        shipper: LogShipper | None = None
        heartbeat: threading.Thread | None = None
        self._lease = lease
        try:
            state_dir = tempfile.mkdtemp(prefix="grid-resume-agent-")
            previous_handlers = self._install_signal_handlers()
            self.session = claim_session(ledger, start, self.o.session)
            lease.renew(session=self.session)
            spool = LogSpool(os.path.join(state_dir, "output.log"))
            spool_handler = SpoolLogHandler(spool)
            log.addHandler(spool_handler)
            live = None
            if self.o.live_queue:
                live = LiveSender(make_sqs_client(self.o.region), self.o.live_queue, self.session, spool)
            shipper = LogShipper(
                ledger,
                self.session,
                spool,
                interval=self.o.log_interval,
                live=live,
                live_interval=self.o.live_interval,
                durable_interval=self.o.durable_log_interval,
            )
            shipper.start()
            heartbeat = threading.Thread(target=self._heartbeat_loop, args=(ledger, lease, spool, shipper), daemon=True)
            heartbeat.start()
            log.info("session %d of %s started on %s", self.session, location, holder.host)
            if imds is not None:
                watcher = MonitorRunner(
                    discover(imds, MonitorSettings(notice_window=self.o.notice_window)),
                    on_event=self.events.put,
                    interval=self.o.imds_poll,
                )
                watcher.start()
            try:
                return self._session(ledger, workdir, spool, shipper)
            except Exception as exc:  # an agent bug, a full disk...: a failure the Airflow side can read
                return self._crashed(ledger, shipper, spool, exc)
        finally:
            if watcher:
                watcher.stop()
            self._stop_heartbeat.set()
            self._beat_now.set()
            if heartbeat:
                heartbeat.join(timeout=10)
            if shipper:
                shipper.stop()
            if spool_handler:
                log.removeHandler(spool_handler)
                spool_handler.spool.close()
            with contextlib.suppress(Exception):
                lease.release()
            self._restore_signal_handlers(previous_handlers)
            if state_dir:
                shutil.rmtree(state_dir, ignore_errors=True)
            clear_captures(workdir)

    def _record_refusal(self, ledger: RunLedger, start: records.SessionStart, exc: LeaseHeldError) -> None:
        """The run is held by a live agent: when the Airflow side launched this session (``--session``),
        claim it and record why it ran nothing, so the watch reads "lease held by session N" (not a boot
        failure, not a script failure) and the next try comes back once that holder has ended. Best effort."""
        if self.o.session is None:
            return  # run by hand: no session number to report under, the exit code and message say it
        held_by = exc.holder_session
        try:
            self.session = claim_session(ledger, start, self.o.session)
            outcome = records.Outcome(
                session=self.session,
                status=INTERRUPTED,
                exit_code=None,
                clean=True,
                reason=f"lease held by session {held_by if held_by is not None else '(unknown)'}: nothing was run",
                hint=str(exc),
                started_at=start.started_at,
                ended_at=_utc(),
                agent_exit_code=EXIT_LEASE_HELD,
                lease_held_by=held_by,
            )
            ledger.write_record(outcome, self.session)
        except Exception as write_error:
            log.error("could not record the lease refusal in session %s: %s", self.o.session, write_error)

    # -- the session proper ----------------------------------------------------------------
    def _session(self, ledger: RunLedger, workdir: str, spool: LogSpool, shipper: LogShipper) -> int:
        started_at = _utc()
        cache = HashCache()
        clear_captures(workdir)  # a killed agent's: links to old inodes, never synced from here
        self._set_state("restoring")
        restorer = Restorer(ledger, workdir, parallelism=self.o.parallelism, cache=cache, session=self.session)
        try:
            restored = restorer.restore()
        except NoRestorableCheckpointError as exc:
            # Recorded, so the Airflow side sees why the session ended instead of a silent agent.
            log.error("%s", exc)
            result = Classification(FAILED, exc.exit_code, False, f"no restorable checkpoint: {exc}")
            aside = RestoreResult(None, set_aside=restorer.set_aside)
            return self._finish(ledger, shipper, spool, result, started_at, aside, final_sync=False)
        except DiskFullError as exc:  # the instance's disk is too small: not the script's failure
            log.error("%s. %s", exc, crash_hint(exc.__cause__ or exc))
            result = Classification(FAILED, exc.exit_code, False, f"disk full while restoring: {exc}")
            aside = RestoreResult(None, set_aside=restorer.set_aside)
            return self._finish(
                ledger,
                shipper,
                spool,
                result,
                started_at,
                aside,
                final_sync=False,
                cause=records.CAUSE_DISK_FULL,
                hint=crash_hint(exc.__cause__ or exc),
            )
        self.downloaded_bytes = restored.bytes_downloaded
        log.info(restored.summary())
        if restored.fallback_note():
            log.error("%s", restored.fallback_note())
        self.uses_markers = restored.manifest is not None and uses_markers(restored.manifest.extra)
        path_filter = PathFilter(self.o.include, self.o.exclude)
        self.captures = Captures(workdir, path_filter, cache)
        self.syncer = Syncer(
            ledger,
            workdir,
            session=self.session,
            path_filter=path_filter,
            cache=cache,
            parallelism=self.o.parallelism,
            last_manifest=restored.manifest,
            keep_manifests=self.o.keep_manifests,
            progress=self.progress.heartbeat,
        )
        early = self._pending_stop()
        if early is not None:
            log.warning("interruption before the command started (%s): nothing to run", early.source)
            result = Classification(INTERRUPTED, 0, True, "interrupted before the command started")
            return self._finish(ledger, shipper, spool, result, started_at, restored, final_sync=False)
        env = command_env(
            dict(os.environ),
            session=self.session,
            run_uri=self.o.run_uri,
            workdir=workdir,
            manifest=restored.manifest.name if restored.manifest else None,
            instance_id=self.instance_id,
        )
        become_subreaper()
        try:
            child = Child(
                self.o.command,
                cwd=workdir,
                env=env,
                spool=spool,
                capture_dir=os.path.dirname(spool.path),
                passthrough=self.o.passthrough,
                progress=self.progress,
            )
        except SpawnError as exc:
            log.error("%s", exc)
            result = classify(exc.exit_code, signalled=False)
            return self._finish(ledger, shipper, spool, result, started_at, restored, final_sync=False)
        self._child = child
        self._set_state("running")
        log.info("started the command (pid %d): %s", child.pid, " ".join(self.o.command))
        threading.Thread(target=lambda: self.events.put(Exited(child.proc.wait())), daemon=True).start()
        returncode, signalled, killed = self._watch(child)
        stragglers = child.finish(grace=max(1.0, self.o.min_grace))
        result = classify(returncode, signalled=signalled, killed_after_deadline=killed)
        if stragglers:
            result = Classification(
                result.status,
                result.exit_code,
                False,
                result.reason,
                (*result.warnings, "processes left behind by the command were killed"),
            )
        return self._finish(ledger, shipper, spool, result, started_at, restored, final_sync=True)

    def _watch(self, child: Child) -> tuple[int, bool, bool]:
        """Wait for the command, reacting to notices, rebalances and the sync schedule. During a stop,
        a leader that exits (a shell running the trainer dies of the SIGTERM at once) does not end the
        wait: the rest of its group keeps the notice's time to save, its output still tailed."""
        signalled = killed = False
        kill_at: float | None = None
        leader: int | None = None  # the leader's return code, once it exited during a stop
        rest: list[int] = []  # the exit codes of the rest of its group, reaped since
        next_sync = time.monotonic() + self.o.sync_interval
        while True:
            now = time.monotonic()
            waits = [next_sync - now] + ([kill_at - now] if kill_at is not None else [])
            waits += [GROUP_POLL] if leader is not None else []
            try:
                event = self.events.get(timeout=max(0.0, min(waits)))
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is None:
                if leader is not None:
                    rest += reap_orphans()
                    if not child.group_alive():
                        log.info("the rest of the command's group exited (codes %s)", rest)
                        return group_returncode(leader, rest), signalled, killed
                if kill_at is not None and now >= kill_at:
                    log.error("the command did not exit before the deadline: killing its process group")
                    child.signal_group(signal.SIGKILL)
                    killed, kill_at = True, None
                    if leader is not None:
                        return leader, signalled, killed
                if now >= next_sync:
                    next_sync = now + self.o.sync_interval
                    if not signalled:
                        self._start_background_sync("periodic")
                continue
            if isinstance(event, Exited):
                if not signalled or killed or kill_at is None or not child.group_alive():
                    return event.returncode, signalled, killed
                leader, kill_at = event.returncode, group_kill_at(kill_at, now, self.o.min_grace)
                log.warning(
                    "the command's leader (pid %d) exited (code %d) but processes of its group still run: they keep "
                    "%.1f s to save and exit",
                    child.pid,
                    event.returncode,
                    kill_at - now,
                )
                continue
            reaction = react(event, self.notice)
            if reaction == SYNC:
                log.info("%s", event.detail or f"{event.source}: syncing now, not stopping")
                self._start_background_sync(event.source)
            elif reaction == KILL:
                log.warning("second stop signal: killing the command's process group now")
                child.signal_group(signal.SIGKILL)
                killed, kill_at = True, None
                if leader is not None:
                    return leader, signalled, killed
            elif reaction == TIGHTEN:
                notice = self._accept(event)
                if kill_at is not None:
                    kill_at = min(kill_at, self._kill_deadline(notice))
            elif reaction == START_STOP:
                notice = self.notice = self._accept(event)
                self._set_state("stopping")
                signalled = True
                self._sync_cancel.set()
                child.signal_group(signal.SIGTERM)  # first: planning the deadline walks the workdir
                kill_at = self._kill_deadline(notice)
                left = kill_at - time.monotonic()
                log.warning(
                    "interruption notice (%s, action %s, reclaim at %s): sent SIGTERM to the command's "
                    "process group; it has %.1f s to save its state and exit",
                    notice.source,
                    notice.action,
                    _utc(notice.reclaim_at),
                    left,
                )

    def _accept(self, event: StopEvent) -> StopEvent:
        """Log a stop event and give it a reclaim time (a signal, nobody watching or a lost lease announce
        none: the command gets ``signal_grace`` plus the sync reserve)."""
        if event.source == "unwatched":
            log.error(
                "%s (its task was stopped while no trigger ran, or the triggerer is down): stopping it so the "
                "instance does not run unattended",
                event.detail,
            )
        elif event.source == "lease":
            log.error("%s: stopping this session", event.detail)
        elif event.source != "imds":
            log.warning("%s", event.detail or event.source)
        return event.with_reclaim(time.time(), self.o.signal_grace + self.o.sync_reserve)

    def _kill_deadline(self, notice: StopEvent) -> float:
        """Monotonic time after which the command's group is killed: the reclaim time minus what the
        final sync is expected to need for the command's own save, but never less than ``min_grace``
        from now (pending bytes only add warnings: see deadline.plan_final_sync)."""
        assert self.syncer is not None
        assert notice.reclaim_at is not None
        if notice.source == "imds":
            seen_ago = time.monotonic() - self._notice_seen.setdefault(notice.reclaim_at, time.monotonic())
            seconds_left = seconds_until_reclaim(notice.reclaim_at, time.time(), seen_ago, self.o.notice_window)
        else:
            seconds_left = notice.reclaim_at - time.time()
        try:
            pending = self.syncer.pending_bytes()
        except OSError as exc:
            log.warning("could not measure what is pending for the final sync: %s", exc)
            pending = self.syncer.largest_upload
        plan = plan_final_sync(
            pending_bytes=pending,
            checkpoint_bytes=self.syncer.last_upload,
            bytes_per_s=self.syncer.upload_bytes_per_s,
            floor=self.o.sync_reserve,
            seconds_left=seconds_left,
            min_grace=self.o.min_grace,
        )
        for warning in plan.warnings:
            if warning not in self.notice_warnings:
                log.warning("%s", warning)
                self.notice_warnings.append(warning)
        return time.monotonic() + max(self.o.min_grace, seconds_left - plan.reserve)

    def _pending_stop(self) -> StopEvent | None:
        """A stop that arrived while restoring (advisories then are moot: nothing runs yet to sync)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return None
            if isinstance(event, StopEvent) and event.stops:
                self.notice = self._accept(event)
                return self.notice

    # -- syncing ---------------------------------------------------------------------------
    def _on_marker(self, written_by_ns: int | None) -> None:
        """A checkpoint marker line was just read (in the output tail): capture the workdir now, before
        the script writes its next checkpoint, and have the capture synced in the background."""
        if self.captures is None:
            return
        if not self.uses_markers:
            self.uses_markers = True
            log.info(
                "checkpoint marker seen: the run's checkpoints are now the marked ones (and the final sync after "
                "a clean exit); periodic syncs of the live workdir stop"
            )
        capture = self.captures.take(written_by_ns)
        if capture is not None:
            capture.progress = (self.progress.heartbeat() or {}).get("done")
            log.info("checkpoint marker %d: captured %d files", capture.number, len(capture.files))
            self._start_background_sync(MARKED)

    def _start_background_sync(self, reason: str) -> None:
        with self._sync_start:  # the output tail starts marker syncs, the main thread the others
            if self._sync_thread and self._sync_thread.is_alive():
                if reason != MARKED:
                    log.info("a sync is already running; skipping the %s sync", reason)
                return  # a marker's capture waits: the running sync takes it when it ends
            self._sync_thread = threading.Thread(target=self._background_sync, args=(reason,), daemon=True)
            self._sync_thread.start()

    def _background_sync(self, reason: str) -> None:
        assert self.syncer is not None
        try:
            self._set_state("running+syncing")
            if reason != MARKED and not self.uses_markers:
                log.info("%s sync: %s", reason, self.syncer.sync(reason, self._sync_cancel).summary())
            elif reason != MARKED and not self._said_periodic_off:
                self._said_periodic_off = True
                log.info("this run uses checkpoint markers: the %s sync only uploads marked checkpoints", reason)
            while self._sync_capture(self._sync_cancel):
                pass
        except SyncCancelled:
            log.info("%s sync cancelled by the interruption; the final sync reuses what it uploaded", reason)
        except Exception as exc:
            log.error("%s sync failed (the run keeps its previous checkpoint): %s", reason, exc)
        finally:
            if self.state == "running+syncing":
                self._set_state("running")

    def _sync_capture(self, cancel: threading.Event) -> bool:
        """Sync the capture waiting, if any (False when none waits or the stop began)."""
        assert self.syncer is not None and self.captures is not None
        capture: Capture | None = None if cancel.is_set() else self.captures.pop()
        if capture is None:
            return False
        extra = manifest_extra(True, MARKED)
        if capture.progress is not None:  # the step of the capture, not of when its sync began
            extra["progress"] = {"done": capture.progress}
        try:
            result = self.syncer.sync(MARKED, cancel, root=capture.root, extra=extra, expected=capture.files)
        except BaseException:
            self.captures.put_back(capture)  # cancelled or failed: the final path (or a newer marker) takes it
            raise
        capture.discard()
        log.info("checkpoint marker %d sync: %s", capture.number, result.summary())
        return True

    def _final_sync(self, complete: bool = False) -> tuple[str | None, str | None]:
        """(manifest name, error). Retried once: content addressing makes a retry cheap. ``complete``: the
        command exited 0, so the workdir is a complete checkpoint. If it is not, a capture still waiting
        is synced after it (it is complete and becomes the newest)."""
        assert self.syncer is not None
        with self._sync_start:
            thread = self._sync_thread
        if thread:
            thread.join()
        error = None
        extra = manifest_extra(self.uses_markers, EXITED if complete else None)
        for attempt in (1, 2):
            try:
                result = self.syncer.sync("final", threading.Event(), extra=extra)
                log.info("final sync: %s", result.summary())
                if not complete and self.captures is not None and self.captures.pending():
                    try:
                        self._sync_capture(threading.Event())
                    except Exception as exc:
                        log.error("the waiting checkpoint marker's capture could not be synced: %s", exc)
                    last = self.syncer.last_manifest
                    return (last.name if last else None), None
                return (result.manifest.name if result.manifest else None), None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("final sync attempt %d failed: %s", attempt, error)
        last = self.syncer.last_manifest
        return (last.name if last else None), error

    # -- the end ---------------------------------------------------------------------------
    def _finish(
        self,
        ledger: RunLedger,
        shipper: LogShipper,
        spool: LogSpool,
        result: Classification,
        started_at: str,
        restored: RestoreResult,
        *,
        final_sync: bool,
        cause: str | None = None,
        hint: str | None = None,
    ) -> int:
        self._set_state("syncing")
        manifest, sync_error = (None, None)
        if final_sync:
            manifest, sync_error = self._final_sync(exit_is_complete(result.status, result.exit_code, False))
        elif self.syncer and self.syncer.last_manifest:
            manifest = self.syncer.last_manifest.name
        exit_code = result.agent_exit_code
        status, warnings = result.status, [*result.warnings, *self.notice_warnings]
        if status == INTERRUPTED and self.notice is not None and self.notice.source == "planned":
            status = STOPPED  # asked for: spends no budget, the Airflow side launches the next session at once
        fallback = restored.fallback_note()
        if fallback:
            warnings.insert(0, fallback)
        if sync_error:
            warnings.append(f"the final sync failed: {sync_error}")
            if result.status != FAILED:
                exit_code = EXIT_SYNC_FAILED
                if result.status != INTERRUPTED:
                    status = FAILED
        for w in warnings:
            log.warning(w)
        log.info("session %d ended: %s (%s)", self.session, status, result.reason)
        outcome = records.Outcome(
            session=self.session,
            status=status,
            exit_code=result.exit_code,
            clean=result.clean and not sync_error,
            reason=result.reason,
            warnings=warnings,
            notice=self.notice.as_dict() if self.notice else None,
            manifest=manifest,
            restored_from=restored.manifest.name if restored.manifest else None,
            restore_fallbacks=[{"manifest": n, "reason": r} for n, r in restored.fallbacks],
            set_aside=restored.set_aside_record(),
            restore_fallback=restored.fallback_record(),
            cause=cause,
            hint=hint,
            started_at=started_at,
            ended_at=_utc(),
            tail=spool.tail_lines(40) if status == FAILED else [],
            agent_exit_code=exit_code,
            progress=self.progress.outcome(),
            transfer=self._transfer(),
        )
        try:
            shipper.flush()
            ledger.write_record(outcome, self.session)
        except Exception as exc:  # retried already; the Airflow side will see no outcome and a silent heartbeat
            log.error("could not record the outcome in the ledger (%s): %s", status, exc)
            exit_code = exit_code or EXIT_LEDGER_UNAVAILABLE
        else:
            shipper.ended()
        self._set_state("ended")
        return exit_code

    def _abandon_restore(self, ledger: RunLedger, silent_for: float) -> None:
        """Nobody has watched for the whole timeout and the restore has not finished (it may hang on a
        slow or stuck S3): record why and end the process, so the bootstrap powers the instance off.
        Nothing was changed in the ledger yet; the next session restores again."""
        log.error(
            "no Airflow trigger has watched this session for %.0f s and the restore has not finished: ending the "
            "session so the instance does not run unattended",
            silent_for,
        )
        outcome = records.Outcome(
            session=self.session,
            status=INTERRUPTED,
            exit_code=0,
            clean=True,
            reason="stopped while restoring: nobody watched the session",
            notice={"action": "terminate", "time": _utc(), "source": "unwatched"},
            ended_at=_utc(),
            agent_exit_code=0,
        )
        with contextlib.suppress(Exception):
            ledger.write_record(outcome, self.session)
        lease = self._lease
        if lease is not None:  # os._exit skips run()'s finally: release here, or the next session waits out the TTL
            with contextlib.suppress(Exception):
                lease.release()
        os._exit(0)

    def _crashed(self, ledger: RunLedger, shipper: LogShipper, spool: LogSpool, exc: Exception) -> int:
        """Any unexpected exception ends the session as ``failed`` with the error and a hint, never as a
        silent agent (which the Airflow side would call lost and relaunch, again and again)."""
        log.exception("the agent failed: %s", exc)
        if self._child is not None and self._child.wait(0) is None:
            self._child.signal_group(signal.SIGTERM)  # the command may still save its state
            if self._child.wait(self.o.min_grace) is None:
                self._child.signal_group(signal.SIGKILL)
        manifest = None
        if self.syncer is not None:
            with contextlib.suppress(Exception):
                manifest, _ = self._final_sync()
        outcome = records.Outcome(
            session=self.session,
            status=FAILED,
            exit_code=EXIT_AGENT_CRASHED,
            clean=False,
            reason=f"the agent failed: {type(exc).__name__}: {exc}",
            hint=crash_hint(exc),
            warnings=list(self.notice_warnings),
            notice=self.notice.as_dict() if self.notice else None,
            manifest=manifest,
            ended_at=_utc(),
            tail=spool.tail_lines(40),
            agent_exit_code=EXIT_AGENT_CRASHED,
            progress=self.progress.outcome(),
            transfer=self._transfer(),
        )
        log.error("session %d ended: failed (%s). %s", self.session, outcome.reason, outcome.hint)
        try:
            shipper.flush()
            ledger.write_record(outcome, self.session)
        except Exception as write_error:
            log.error("could not record the outcome in the ledger either: %s", write_error)
        else:
            shipper.ended()
        self._set_state("ended")
        return EXIT_AGENT_CRASHED

    def _transfer(self) -> dict:
        """The checkpoint bytes this session moved to and from the ledger so far: what a session in another
        region than the bucket pays data transfer for (run/summary.py prices it)."""
        sent = self.syncer.bytes_sent if self.syncer is not None else 0
        return {"uploaded_bytes": sent, "downloaded_bytes": self.downloaded_bytes}

    # -- heartbeat, lease, signals, metadata ---------------------------------------------------
    def _set_state(self, state: str) -> None:
        """Change state and write a heartbeat at once, so watchers see transitions promptly."""
        self.state = state
        self._beat_now.set()

    def _heartbeat_loop(self, ledger: RunLedger, lease: Lease, spool: LogSpool, shipper: LogShipper) -> None:
        """Every ``heartbeat_interval``: the unwatched guard, the lease, and a beat. With a working
        live-output queue the beat is a message (when no output went out since the last one) and
        ``heartbeat.json`` (progress, state, last checkpoint for the UI and gc) is written every
        ``LIVE_STATUS_BEATS`` beats and on every state change; without one, on every beat."""
        seq = 0
        lease_ok = True
        status_at: float | None = None  # monotonic time heartbeat.json was last written
        woken = True
        guard = UnwatchedGuard(self.o.unwatched_timeout, time.monotonic())
        planned_asked = False
        while True:
            seq += 1
            watching = self.state in ("restoring", "running", "running+syncing")
            guard_due = watching and guard.due(time.monotonic())
            # watch.json is read when the guard is due and, until a planned stop was asked, on every beat: a
            # deadline= run's stop back to spot (run/deadline.py) waits one heartbeat, not the guard's minute.
            if guard_due or (watching and not planned_asked):
                try:
                    found = ledger.get_with_etag(ledger.key(layout.watch(self.session)))
                except Exception as exc:  # S3 trouble is not evidence that nobody watches
                    log.warning("could not read watch.json, will retry: %s", exc)
                else:
                    planned = planned_stop_event(found[0]) if found and not planned_asked else None
                    if planned is not None:
                        planned_asked = True
                        self.events.put(planned)
                    if guard_due and guard.observe(found[1] if found else None, time.monotonic()):
                        if self.state == "restoring":
                            self._abandon_restore(ledger, guard.silent_for(time.monotonic()))
                        self.events.put(unwatched_event(guard.silent_for(time.monotonic())))
                        guard.timeout = 0.0  # once
            try:
                if lease_ok and time.time() - (lease.record.renewed_at or 0.0) >= self.o.lease_ttl * LEASE_RENEW_SHARE:
                    lease.renew(session=self.session)  # a PUT each: a few per TTL, not one per heartbeat
            except ConditionalWriteLost:
                lease_ok = False
                self.events.put(lease_lost_event())
            except Exception as exc:
                log.warning("lease renewal failed, will retry: %s", exc)
            now = time.monotonic()
            live = shipper.live if shipper.live_up() else None
            status_due = (
                live is None
                or woken
                or status_at is None
                or now - status_at >= self.o.heartbeat_interval * LIVE_STATUS_BEATS - 1.0
            )
            if not status_due:
                if live is not None and now - live.sent_at >= self.o.heartbeat_interval - 1.0:
                    live.beat()
                status_due = not shipper.live_up()  # refused just now: S3 is the only channel again
            try:
                if status_due:
                    status_at = now
                    last = self.syncer.last_manifest if self.syncer else None
                    beat = records.Heartbeat(
                        session=self.session,
                        seq=seq,
                        time=_utc(),
                        epoch=time.time(),
                        state=self.state,
                        log_bytes=spool.size,
                        last_manifest=last.name if last else None,
                        notice=self.notice.as_dict() if self.notice else None,
                        interval=self.o.heartbeat_interval * (LIVE_STATUS_BEATS if shipper.live_up() else 1),
                        log_interval=shipper.log_interval,
                        progress=self.progress.heartbeat(),
                        transfer=self._transfer(),
                    )
                    ledger.write_record(beat, self.session)
            except Exception as exc:
                log.warning("heartbeat failed, will retry: %s", exc)
            woken = self._beat_now.wait(self.o.heartbeat_interval)
            self._beat_now.clear()
            if self._stop_heartbeat.is_set():
                return

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(
                sig, lambda signum, _frame: self.events.put(signal_event(signal.Signals(signum).name))
            )
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _probe_imds(self) -> ImdsClient | None:
        """Check the metadata service once before starting; 403 means it is disabled."""
        if self.o.no_imds:
            log.info("metadata service watching is off (--no-imds): notices arrive only as signals")
            return None
        endpoint = resolve_endpoint(self.o.imds_endpoint)
        client = ImdsClient(endpoint, timeout=self.o.imds_timeout)
        try:
            client.token()
            body = client.get("/latest/meta-data/instance-id")
            self.instance_id = body.decode().strip() if body else None
            return client
        except ImdsDisabled as exc:
            if self.o.require_imds:
                raise UsageError(f"{exc} ({endpoint}), and --require-imds was given") from exc
            log.warning("%s (%s): watching for signals only", exc, endpoint)
            return None
        except ImdsUnavailable as exc:
            if self.o.require_imds:
                raise UsageError(
                    f"the metadata service at {endpoint} is unreachable ({exc}) and --require-imds was given"
                ) from exc
            log.warning("the metadata service at %s is unreachable (%s): will keep trying", endpoint, exc)
            return client


def configure_logging(verbose: bool = False) -> None:
    """The agent's own lines go to stderr, prefixed so they stand apart from the command's."""
    if any(getattr(h, "_grid_resume", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[grid-resume] %(asctime)s %(levelname)s %(message)s"))
    # A mark on the handler, so configuring again (a second agent in one process: tests, verify) adds no other;
    # logging.Handler declares no such attribute.
    handler._grid_resume = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def run_agent(options: AgentOptions) -> int:
    """Run a session and turn AgentErrors into a message and their exit code."""
    try:
        return Supervisor(options).run()
    except AgentError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except (BotoCoreError, ClientError) as exc:  # after botocore's own retries
        log.error("the run ledger failed after retries: %s", exc)
        return EXIT_LEDGER_UNAVAILABLE
