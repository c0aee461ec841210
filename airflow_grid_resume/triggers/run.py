"""Watching one session of a run: stream its output into the task log, tell how it ended.

The ledger is the source of truth: the outcome the agent wrote decides succeeded, failed or
interrupted. Without an outcome, a terminated instance or a heartbeat gone silent means the session
was lost. The trigger enforces ``deadline`` (the operator's ``max_run``) itself, because Airflow's
``execution_timeout`` does not count time spent deferred (apache/airflow#69678 and #73475, open in
Airflow 3), and terminates the instance on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.agent.logship import DEFAULT_DURABLE_INTERVAL, DEFAULT_LOG_INTERVAL
from airflow_grid_resume.asyncaws.clients import SharedS3Hook, SharedSqsHook, shared_client
from airflow_grid_resume.asyncaws.describe import Unknown, describe_batcher
from airflow_grid_resume.asyncaws.ledgerreader import AsyncLedgerReader
from airflow_grid_resume.asyncaws.queuereader import LiveQueueReader
from airflow_grid_resume.ec2.bootstrap import NO_PYTHON_MARKER, REFUSED_MARKER
from airflow_grid_resume.ec2.identity import why_not
from airflow_grid_resume.hooks.spot import ENDED_STATES, SpotLaunchHook
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.errors import ManifestError, UnsupportedFormatError
from airflow_grid_resume.ledger.status import SessionStatus
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.logtext import complete_cut, log_lines, log_records
from airflow_grid_resume.run.deadline import (
    STOP,
    DeadlineContext,
    decision_line,
    pool_history,
    pools_from_scores,
    running_progress,
    same_decision,
    watch_choice,
)
from airflow_grid_resume.run.ending import LEASE_HELD, lease_holder_elsewhere
from airflow_grid_resume.spot import fleetstore
from airflow_grid_resume.watch.cadence import ChunkSchedule
from airflow_grid_resume.watch.liveness import ALIVE, BOOTING, NO_AGENT, SILENT, Liveness
from airflow_grid_resume.watch.liveness import GONE as GONE_VERDICT
from airflow_grid_resume.watch.merge import OutputMerge
from airflow_grid_resume.watch.remotecopy import RemoteLogCopy, s3_remote_log_io, try_log_path
from airflow_grid_resume.watch.settle import settled

# How long, after an outcome, the bootstrap gets to power the instance off by itself before it is terminated.
SELF_SHUTDOWN_GRACE = 30.0
SELF_SHUTDOWN_POLL = 3.0
# How long a watch keeps trying to have EC2 confirm a termination before it reports anyway.
TERMINATE_TIMEOUT = 300.0
# How often, at most, the watch records its log offset in watch.json while output flows (and always
# at the end, and when the triggerer cancels the watch), by default: each is a PUT on the run's S3
# bill, and a triggerer killed outright repeats at most this much output.
OFFSET_SAVE_INTERVAL = 120.0
# How often, at most, a watch whose reads find no new output looks for the outcome (one GET each).
OUTCOME_CHECK_INTERVAL = 10.0
# ChunkSchedule's defaults: a run with no new chunk for a minute is read every 10 s.
QUIET_AFTER, QUIET_POLL = 60.0, 10.0
# The longest back-off between failed polls of the live-output queue.
LIVE_RETRY_MAX = 30.0

log = logging.getLogger(__name__)


SELF_SHUTDOWN = "Client.InstanceInitiatedShutdown"
BOOT_FAILURE = (
    "the instance powered itself off before the agent started: the image needs bash and python3 >= 3.9, and the "
    "instance profile needs s3:GetObject and s3:PutObject on the run's prefix (the instance's console output, "
    "`aws ec2 get-console-output`, says which)"
)


class RunWatchTrigger(BaseTrigger):
    """Stream session ``session`` of ``run_uri`` into the task log until it ends.

    Events: ``succeeded``, ``failed``, ``interrupted`` (from the agent's outcome), ``lost`` (no
    outcome, and the instance is gone or the agent silent), ``timeout`` (``deadline`` passed; the
    instance is terminated). The log offset already written to the task log is kept in the ledger
    (``sessions/N/watch.json``), so a triggerer restart neither repeats nor skips lines.
    """

    def __init__(
        self,
        *,
        run_uri: str,
        session: int,
        instance_id: str,
        launched_at: float,
        deadline: float | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        log_offset: int = 0,
        poll_interval: float = 2.0,
        instance_check_interval: float = 30.0,
        heartbeat_timeout: float = 120.0,
        boot_timeout: float = 900.0,
        watch_beat: float = 120.0,
        deferred_at: float | None = None,
        not_found_grace: float = 120.0,
        offset_save_interval: float = OFFSET_SAVE_INTERVAL,
        live_queue: str | None = None,
        s3_write: dict | None = None,  # S3WriteOptions.to_json(): what the trigger's writes carry
        instance_region: str | None = None,
        deadline_policy: dict | None = None,
    ) -> None:
        super().__init__()
        self.s3_write = s3_write
        self.instance_region = instance_region  # where the instance runs, when not in region_name (placements)
        # A deadline= run's session on on-demand: {"context": DeadlineContext as JSON, "pools": [...],
        # "interval": s}; the policy is asked every interval whether to stop it and go back to spot.
        self.deadline_policy = deadline_policy
        self._stop_asked: dict | None = None
        self._next_policy_check = 0.0
        self._last_decision: records.Decision | None = None
        self._progress: dict | None = None
        self._scores_warned = False
        self._spot_since: dict[str, float] = {}  # pool name -> when its spot was first seen, in an unbroken run
        self.live_queue = live_queue
        self.offset_save_interval = offset_save_interval
        self.not_found_grace = not_found_grace
        self.deferred_at = deferred_at
        self.watch_beat = watch_beat
        self._watch_written = 0.0
        self.run_uri = run_uri
        self.session = session
        self.instance_id = instance_id
        self.launched_at = launched_at
        self.deadline = deadline
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.log_offset = log_offset
        self.poll_interval = poll_interval
        self.instance_check_interval = instance_check_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.boot_timeout = boot_timeout
        self._remote_copy: RemoteLogCopy | None = None  # made when the watch starts (_events)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_uri": self.run_uri,
                "session": self.session,
                "instance_id": self.instance_id,
                "launched_at": self.launched_at,
                "deadline": self.deadline,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "log_offset": self.log_offset,
                "poll_interval": self.poll_interval,
                "instance_check_interval": self.instance_check_interval,
                "heartbeat_timeout": self.heartbeat_timeout,
                "boot_timeout": self.boot_timeout,
                "watch_beat": self.watch_beat,
                "deferred_at": self.deferred_at,
                "not_found_grace": self.not_found_grace,
                "offset_save_interval": self.offset_save_interval,
                "live_queue": self.live_queue,
                "s3_write": self.s3_write,
                "instance_region": self.instance_region,
                "deadline_policy": self.deadline_policy,
            },
        )

    @property
    def _ec2_region(self) -> str | None:
        return self.instance_region or self.region_name

    def _ec2_hook(self) -> SpotLaunchHook:
        return SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self._ec2_region)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for event in settled(self._events(), self.deferred_at):
            yield event

    async def _events(self) -> AsyncIterator[TriggerEvent]:
        s3_hook = SharedS3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        ec2_hook = self._ec2_hook()
        batcher = describe_batcher(self.aws_conn_id, self._ec2_region)
        self._ledger: AsyncLedgerReader | None = None
        self._merge = OutputMerge(self.log_offset)  # restarted where watch.json says, once it is read
        self._s3_at = self.log_offset  # where the next S3 read of the output starts
        self._s3_found = False
        self._live_heard = False  # a live message came since the last S3 read
        self._live_final = False  # the final live message came
        self._offset_logged = self._offset_saved = -1
        self._offset_saved_at = 0.0
        self._remote_copy = self._make_remote_copy()
        liveness = Liveness(
            now=time.monotonic(),
            launched_ago=time.time() - self.launched_at,  # both Airflow-side clocks
            heartbeat_timeout=self.heartbeat_timeout,
            boot_timeout=self.boot_timeout,
            not_found_grace=self.not_found_grace,
        )
        async with (
            shared_client(s3_hook, ("s3", self.aws_conn_id, self.region_name)) as s3,
            shared_client(ec2_hook, ("ec2", self.aws_conn_id, self._ec2_region)) as ec2,
            self._live_reader() as live,
            self._log_offset_kept_on_cancel(),
        ):
            period = DEFAULT_LOG_INTERVAL if live is None else DEFAULT_DURABLE_INTERVAL
            reads = ChunkSchedule(period=period, poll=self.poll_interval, started=time.monotonic())
            self._pace_s3(reads, period)
            writes = S3WriteOptions.from_json(self.s3_write)
            ledger = self._ledger = AsyncLedgerReader(s3, self.run_uri, self.session, reads, writes)
            offset, pending = self.log_offset, b""
            started = False
            next_instance_check = 0.0
            gone_seen = False
            failures = 0
            outcome_checked = time.monotonic()
            while True:
                try:
                    if not started:
                        try:
                            watched = await ledger.get_record(records.Watch)
                        except UnsupportedFormatError as exc:  # a newer triggerer's bookkeeping, not the agent's
                            self.log.warning("a newer watch.json, kept offset not used: %s", exc)
                            watched = None
                        offset = max(self.log_offset, watched.log_offset if watched else 0)
                        self._stop_asked = watched.stop if watched else None  # a restarted watch keeps asking
                        self._merge.advance(offset)
                        self._s3_at = offset
                        started = True
                    now = time.monotonic()
                    s3_due = now >= reads.next_read() or gone_seen
                    before = self._merge.expected
                    offset, pending = await self._stream(ledger, offset, pending, read_s3=s3_due)
                    found_output = self._merge.expected > before
                    if s3_due:
                        if self._s3_found:
                            reads.hit(time.monotonic(), started=now)  # landed by the time the answer came
                        else:
                            reads.miss(now)  # not landed when the read started
                    if found_output or self._live_heard:
                        liveness.output(now)  # a live message, even one without output, is the agent alive
                        self._live_heard = False
                    if time.time() - self._watch_written >= self.watch_beat:
                        await self._save_offset(ledger, offset)  # the agent stops a session nobody watches
                    # The agent writes the outcome after its last chunk: look for it once no new output came
                    # for OUTCOME_CHECK_INTERVAL (then at most that often), when a LIST showed it, when the
                    # agent's last live message says so, and once the instance was seen gone, before anything
                    # is called lost.
                    outcome = None
                    if (
                        ledger.outcome_listed
                        or gone_seen
                        or self._live_final
                        or (
                            not found_output
                            and now - outcome_checked >= OUTCOME_CHECK_INTERVAL
                            and now - (liveness.output_read or 0.0) >= OUTCOME_CHECK_INTERVAL
                        )
                    ):
                        self._live_final = False
                        outcome_checked = now
                        try:
                            outcome = await ledger.get_record(records.Outcome)
                        except ManifestError as exc:  # the session ended, but how cannot be known: not "lost"
                            offset, pending = await self._stream(ledger, offset, pending, final=True)
                            reason = f"session {self.session} ended with an unreadable outcome: {exc}"
                            self.log.error("%s", reason)
                            await self._end_instance(ec2_hook, ec2, batcher)
                            yield TriggerEvent(self._event(SessionStatus.FAILED, offset, reason=reason))
                            return
                    if outcome is not None:
                        offset, pending = await self._stream(ledger, offset, pending, final=True)
                        self.log.info("session %d ended: %s (%s)", self.session, outcome.status, outcome.reason)
                        if note := outcome.set_aside_note():
                            self.log.warning("%s", note)
                        await self._end_instance(ec2_hook, ec2, batcher, self_shutdown_grace=SELF_SHUTDOWN_GRACE)
                        if await ledger.release_dead_lease(self.instance_id):  # reclaimed before it released it
                            self.log.info("released the ended agent's lease so the next session can start at once")
                        yield TriggerEvent(self._event(outcome.status, offset, outcome=outcome.to_dict()))
                        return
                    if self.deadline is not None and time.time() >= self.deadline:
                        self.log.error("max_run reached: terminating instance %s", self.instance_id)
                        await self._end_instance(ec2_hook, ec2, batcher)
                        offset, pending = await self._stream(ledger, offset, pending, final=True)
                        yield TriggerEvent(
                            self._event(SessionStatus.TIMEOUT, offset, reason="max_run reached; instance terminated")
                        )
                        return
                    now = time.monotonic()
                    if liveness.heartbeat_due(now):
                        beat = await ledger.get_record(records.Heartbeat)
                        liveness.heartbeat(beat, now)
                        self._progress = beat.progress if beat is not None else self._progress
                        if beat is not None and beat.log_interval is not None:
                            reads.set_period(beat.log_interval)
                            self._pace_s3(reads, beat.log_interval)
                    if self.deadline_policy and self._stop_asked is None and time.time() >= self._next_policy_check:
                        await self._ask_policy(ledger, offset, ec2_hook, ec2)
                    verdict = liveness.verdict(now)
                    if now >= next_instance_check or verdict.kind not in (ALIVE, BOOTING) or gone_seen:
                        next_instance_check = now + self.instance_check_interval
                        view = await batcher.state(ec2, self.instance_id)
                        if isinstance(view, Unknown):
                            self.log.warning("could not describe %s this time: %s", self.instance_id, view.error)
                        elif isinstance(view, dict) and (foreign := self._foreign(view)):
                            # Named by a forged launch.json, or adopted by an older release's tag lookup: never
                            # watch it into a boot timeout, never terminate it. The session is lost.
                            self.log.error("session %d: %s", self.session, foreign)
                            yield TriggerEvent(self._event(SessionStatus.LOST, offset, reason=foreign))
                            return
                        else:
                            liveness.instance(view, now)
                        verdict = liveness.verdict(now)
                    lost = None
                    if verdict.kind == GONE_VERDICT:
                        # The agent records its outcome before the bootstrap powers off: look once more first.
                        lost = f"instance {self.instance_id}: {verdict.reason}, with no outcome" if gone_seen else None
                        gone_seen = True
                    elif verdict.kind in (SILENT, NO_AGENT) and liveness.not_found_since is None:
                        lost = verdict.reason  # the instance runs but the agent is dead or hung: stop paying for it
                    boot_ended = bool(lost) and verdict.state == SELF_SHUTDOWN
                    if boot_ended and await ledger.exists(records.SessionStart):
                        boot_ended = False
                    holder = None
                    if boot_ended:  # an agent refused by a live lease exits 3 and powers off too: not a boot failure
                        holder = lease_holder_elsewhere(await ledger.read_lease(), self.session, time.time())
                    if holder is not None:
                        lost = f"{LEASE_HELD} session {holder or '(unknown)'}: this session's agent ran nothing"
                    elif boot_ended:
                        # Powered itself off and never claimed its session: the bootstrap failed on this image
                        # (no S3 access; no python3 >= 3.9 is told apart by boot.json). Not spot weather: a failure.
                        offset, pending = await self._stream(ledger, offset, pending, final=True)
                        # The console is the instance's own (no other instance writes it): read it first.
                        problem = await self._boot_problem_on_console(ec2)
                        if problem is None:
                            boot = await ledger.get_record(records.Boot)
                            problem = (boot.message or boot.problem) if boot is not None and boot.problem else None
                        await self._end_instance(ec2_hook, ec2, batcher)
                        if problem:  # the bootstrap said why: the image, or a download it refused; not the script
                            self.log.error("session %d: %s", self.session, problem)
                            refused = problem.startswith(REFUSED_MARKER)
                            cause = records.CAUSE_TAMPERED if refused else records.CAUSE_IMAGE
                            yield TriggerEvent(
                                self._event(SessionStatus.FAILED, offset, outcome={"reason": problem, "cause": cause})
                            )
                            return
                        self.log.error("session %d: %s", self.session, BOOT_FAILURE)
                        yield TriggerEvent(self._event(SessionStatus.FAILED, offset, reason=BOOT_FAILURE))
                        return
                    if lost:
                        offset, pending = await self._stream(ledger, offset, pending, final=True)
                        self.log.warning("session %d lost: %s", self.session, lost)
                        await self._end_instance(ec2_hook, ec2, batcher)
                        if await ledger.release_dead_lease(self.instance_id):
                            self.log.info("released the lost agent's lease so the next session can start at once")
                        yield TriggerEvent(self._event(SessionStatus.LOST, offset, reason=lost))
                        return
                    failures = 0
                except UnsupportedFormatError:  # a newer agent wrote the session's records: refused, never guessed at
                    await self._end_instance(ec2_hook, ec2, batcher)
                    raise
                except (ClientError, BotoCoreError) as exc:  # after retries: no evidence of anything; try again
                    failures += 1
                    if failures in (1, 10) or failures % 100 == 0:
                        self.log.warning("reading session %d failed (%d in a row): %s", self.session, failures, exc)
                    await asyncio.sleep(self.poll_interval * (2 ** min(failures, 3)))
                    continue
                await self._wait(self._until_next(reads, liveness, next_instance_check))

    @contextlib.asynccontextmanager
    async def _live_reader(self) -> AsyncIterator[LiveQueueReader | None]:
        """The live-output queue's reader when the run has one (None: output comes through S3 only),
        long-polling in a task of its own for as long as the watch runs."""
        self._live_heard = self._live_final = False
        self._wake: asyncio.Future | None = None
        if not self.live_queue:
            yield None
            return
        hook = SharedSqsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        async with shared_client(hook, ("sqs", self.aws_conn_id, self.region_name)) as sqs:
            reader = LiveQueueReader(sqs, self.live_queue, self.session, self.log)
            task = asyncio.ensure_future(self._poll_live(reader))
            try:
                yield reader
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _poll_live(self, reader: LiveQueueReader) -> None:
        """Long polls, one after the other; each message goes into the merge and wakes the watch."""
        failures = 0
        while not reader.stopped:
            messages = await reader.receive()
            if messages is None:  # no evidence of anything: S3 still brings the output
                failures += 1
                await asyncio.sleep(min(LIVE_RETRY_MAX, 2.0 ** min(failures, 5)))
                continue
            failures = 0
            for message in messages:
                self._merge.add(message.offset, message.data)
                self._live_final = self._live_final or message.final
            if messages:
                self._live_heard = True
                self._poke()

    async def _wait(self, delay: float) -> None:
        """Until the next thing to do, ``delay`` seconds from now, or until a live message arrives."""
        if self._live_heard:
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(delay, self._poke)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _pace_s3(self, reads: ChunkSchedule, period: float) -> None:
        """While a live-output queue brings the output, S3 gets it only every ``period`` (a minute): read it
        every sixth of that until its rhythm is known, and once a period when no chunk came for three."""
        slow = bool(self.live_queue) and period >= DEFAULT_DURABLE_INTERVAL / 2
        reads.poll = max(self.poll_interval, period / 6) if slow else self.poll_interval
        reads.quiet_after = 3 * period if slow else QUIET_AFTER
        reads.quiet_poll = period if slow else QUIET_POLL

    def _until_next(self, reads: ChunkSchedule, liveness: Liveness, next_instance_check: float) -> float:
        """Seconds to sleep until the next read, heartbeat read, instance check or deadline."""
        now = time.monotonic()
        due = [reads.next_read(), liveness.next_heartbeat_read(), next_instance_check]
        if self.deadline is not None:
            due.append(now + self.deadline - time.time())
        due.append(now + max(0.0, self.watch_beat - (time.time() - self._watch_written)))
        return min(max(min(due) - now, 0.05), self.poll_interval * 5)

    async def _end_instance(
        self, hook: SpotLaunchHook, client: Any, batcher: Any, *, self_shutdown_grace: float = 0.0
    ) -> None:
        """No instance outlives its session: after an outcome, give the bootstrap ``self_shutdown_grace``
        seconds to power off on its own (the agent still releases its lease), then terminate and
        retry until EC2 confirms. An unconfirmed termination is logged for ``grid-resume reap``.
        The grace is watched through the triggerer's batched DescribeInstances, every few seconds:
        a fleet's runs often end together, and one describe per run per second would hit EC2's
        throttling."""
        view = await batcher.state(client, self.instance_id)
        if isinstance(view, dict) and (foreign := self._foreign(view)):
            self.log.error("not terminating %s: %s", self.instance_id, foreign)
            return
        deadline = time.monotonic() + self_shutdown_grace
        # A watch that checks its instance more often than SELF_SHUTDOWN_POLL polls the grace that often too.
        poll = min(SELF_SHUTDOWN_POLL, self.instance_check_interval)
        while time.monotonic() < deadline:
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            view = await batcher.state(client, self.instance_id)
            if isinstance(view, dict) and view.get("State", {}).get("Name") in ENDED_STATES:
                return
        if not await hook.a_ensure_terminated(self.instance_id, client=client, timeout=TERMINATE_TIMEOUT):
            self.log.error(
                "could not confirm that instance %s is terminated within %.0f s; `grid-resume reap` finds it by its "
                "tags once its expiry passes",
                self.instance_id,
                TERMINATE_TIMEOUT,
            )

    def _foreign(self, instance: dict) -> str | None:
        """Why a listed instance is not this session's (its ClientToken and tags, ec2/identity.py), else None."""
        problem = why_not(instance, self.run_uri, self.session)
        return f"instance {self.instance_id} is not this session's: {problem}" if problem else None

    async def _stream(
        self, ledger: AsyncLedgerReader, offset: int, pending: bytes, *, final: bool = False, read_s3: bool = True
    ) -> tuple[int, bytes]:
        """Log every complete new line into the task log; remember how far in the ledger.

        The output comes from the live messages received so far and, with ``read_s3``, the S3 chunks
        from where S3 was read up to (behind the task log while messages bring the output first);
        ``OutputMerge`` puts the two in order and drops what arrived twice."""
        self._s3_found = False
        if read_s3 or final:
            data, self._s3_at = await ledger.read_log(self._s3_at)
            # A read stops after a chunk younger than the upload interval; after the outcome nothing more comes,
            # so the final read takes every chunk left (the agent's last lines often span two fresh chunks).
            while final and data:
                self._merge.add(self._s3_at - len(data), data)
                self._s3_found = True
                data, self._s3_at = await ledger.read_log(self._s3_at)
            if data:
                self._merge.add(self._s3_at - len(data), data)
                self._s3_found = True
        buffered = pending + self._merge.take()
        cut = len(buffered) if final else complete_cut(buffered)
        if cut <= 0:
            return offset, buffered
        for record in log_records(log_lines(buffered[:cut].decode(errors="replace"))):
            self.log.info("%s", record)
            if self._remote_copy is not None:
                self._remote_copy.add(record)
        offset += cut
        self._offset_logged = offset
        if final or time.time() - self._offset_saved_at >= self.offset_save_interval:
            await self._save_offset(ledger, offset)
        return offset, buffered[cut:]

    async def _save_offset(self, ledger: AsyncLedgerReader, offset: int) -> None:
        """Record in ``watch.json`` how far the task log has the session's output. The offset counts as
        saved once the PUT answered: a watch stopped during the PUT saves it again on its way out."""
        self._offset_saved_at = time.time()
        if self._remote_copy is not None:  # first: what a killed triggerer wrote up to the offset is then remote
            try:
                await self._remote_copy.save()
            except Exception as exc:  # the remote log is a copy: never a reason to stop watching
                self.log.warning("could not copy the output to the remote log: %s", exc)
        await self._mark_watched(ledger, offset)
        self._offset_saved = offset

    @contextlib.asynccontextmanager
    async def _log_offset_kept_on_cancel(self) -> AsyncIterator[None]:
        """The triggerer stops the watch (restart, task moved): record the offset logged so far first,
        so the next watch neither repeats nor skips lines. (A killed triggerer repeats at most the
        last ``offset_save_interval`` seconds of output.)"""
        try:
            yield
        except asyncio.CancelledError:
            if self._ledger is not None and self._offset_logged > self._offset_saved:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._save_offset(self._ledger, self._offset_logged), 5.0)
            raise

    def _make_remote_copy(self) -> RemoteLogCopy | None:
        """With S3 remote logging, a copy of the output this watch logs, kept beside the try's log
        (watch/remotecopy.py: a SIGKILLed triggerer uploads nothing)."""
        try:
            io, path = s3_remote_log_io(), try_log_path(getattr(self, "task_instance", None))
        except Exception as exc:
            self.log.warning("no copy of the output in the remote log: %s", exc)
            return None
        return RemoteLogCopy(io, path, self.session) if io is not None and path else None

    async def cleanup(self) -> None:
        """The watch ends in its triggerer (its event, or cancelled): the triggerer uploads the whole trigger
        log now, so this watch's copy of it goes."""
        if self._remote_copy is not None:
            try:
                await asyncio.wait_for(self._remote_copy.discard(), 10.0)
            except Exception as exc:
                self.log.warning("could not delete the copy of the output in the remote log: %s", exc)

    async def _mark_watched(self, ledger: AsyncLedgerReader, offset: int) -> None:
        """``watch.json``: how far the task log has the output, proof that a trigger watches, and the planned
        stop asked for, if any."""
        self._watch_written = time.time()
        await ledger.put_record(records.Watch(log_offset=offset, at=self._watch_written, stop=self._stop_asked))

    async def _ask_policy(self, ledger: AsyncLedgerReader, offset: int, ec2_hook: SpotLaunchHook, ec2: Any) -> None:
        """A deadline= run's session on on-demand: ask EC2 whether spot is there (placement scores), ask the
        policy whether to stay or go back to spot, record a changed decision, and ask the agent for a planned
        stop (through ``watch.json``) when it says go."""
        assert self.deadline_policy is not None
        ctx = DeadlineContext.from_dict(self.deadline_policy["context"])
        interval = float(self.deadline_policy.get("interval") or 60.0)
        self._next_policy_check = time.time() + interval
        pools: dict[str, str] = dict(self.deadline_policy.get("pools") or {})  # pool name -> zone
        scores = None
        try:
            scores = await ec2_hook.a_spot_placement_scores(
                list(self.deadline_policy.get("instance_types") or []),
                str(self.instance_region or self.region_name or ""),
                client=ec2,
            )
        except (ClientError, BotoCoreError) as exc:  # without it, spot counts as unknown: stay on on-demand
            if not self._scores_warned:
                self._scores_warned = True
                self.log.warning("could not read spot placement scores (ec2:GetSpotPlacementScores): %s", exc)
        # The fleet record (read at each question: other runs' sessions add to it): the pools' whole history.
        fleet = await fleetstore.a_read(ledger.client, self.deadline_policy.get("fleet"))
        history = pool_history(fleet, list(self.deadline_policy.get("instance_types") or []), pools.values())
        now = time.time()
        spot_now = pools_from_scores(pools, scores)
        for name, up in spot_now.items():
            if up:
                self._spot_since.setdefault(name, now)
            else:
                self._spot_since.pop(name, None)
        record = watch_choice(
            ctx,
            spot_now,
            now=now,
            spot_since=self._spot_since,
            history=history,
            launched_at=self.launched_at,
            progress_hours=running_progress(ctx, self._progress, now=now, launched_at=self.launched_at),
            tick_seconds=interval,
        )
        if not same_decision(self._last_decision, record):
            self.log.info("deadline policy: %s", decision_line(record.to_dict()))
            await ledger.put_record(record)
        self._last_decision = record
        if record.action == STOP:
            self._stop_asked = {"reason": record.reason, "at": now}
            goal = f"back to spot in {record.pool}" if record.pool else "to wait for spot"
            self.log.info("session %d: asking the agent for a planned stop (%s)", self.session, goal)
            await self._mark_watched(ledger, max(offset, self._offset_logged))

    async def _boot_problem_on_console(self, ec2: Any) -> str | None:
        """The bootstrap's "refused to start" or "no usable Python" line from the instance's console output
        (ec2:GetConsoleOutput): the one record of a boot problem no other instance can forge, and the only one of
        an image with no python3 at all, which cannot write boot.json; None when absent or unreadable."""
        try:
            answer = await ec2.get_console_output(InstanceId=self.instance_id)
        except (ClientError, BotoCoreError) as exc:
            self.log.info("could not read the console output of %s: %s", self.instance_id, exc)
            return None
        for line in str(answer.get("Output") or "").splitlines():
            for marker in (REFUSED_MARKER, NO_PYTHON_MARKER):
                if marker in line:
                    return line[line.index(marker) :].strip()
        return None

    def _event(self, status: str, offset: int, *, outcome: dict | None = None, reason: str | None = None) -> dict:
        return {
            "status": str(status),  # plain JSON: a SessionStatus is written as its value
            "run_uri": self.run_uri,
            "session": self.session,
            "instance_id": self.instance_id,
            "log_offset": offset,
            "outcome": outcome,
            "reason": reason or (outcome or {}).get("reason"),
        }

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it: the instance must not live on.

        The termination runs in a task of its own, shielded: Airflow 3.3.2's triggerer sends a killed trigger's
        cancellation again at every state sync (about 1 s: ``TriggerRunnerSupervisor`` keeps it in
        ``cancelling_triggers`` until the trigger has finished) and swallows the CancelledError that interrupts
        ``on_kill`` (``run_trigger`` in airflow/jobs/triggerer_job_runner.py; ``on_kill`` came with
        apache/airflow#65590), so an on_kill still retrying TerminateInstances after one sync was abandoned
        with the instance running (found by the real-components chaos test, tests/system/test_real_airflow.py)."""
        self.log.warning("task stopped by a user: terminating instance %s", self.instance_id)
        task = asyncio.ensure_future(self._terminate_for_user())
        _ON_KILL_TASKS.add(task)  # the event loop keeps only a weak reference to a task
        task.add_done_callback(_ON_KILL_TASKS.discard)
        await asyncio.shield(task)

    async def _terminate_for_user(self) -> None:
        hook = self._ec2_hook()
        with contextlib.suppress(ClientError, BotoCoreError):  # no answer: terminate, as before the check
            found = (await hook.a_describe_instances([self.instance_id])).get(self.instance_id)
            if found is not None and (foreign := self._foreign(found)):
                self.log.error("not terminating %s: %s", self.instance_id, foreign)
                return
        if not await hook.a_ensure_terminated(self.instance_id, timeout=20.0):
            self.log.error("could not confirm that %s is terminated; `grid-resume reap` finds it", self.instance_id)


# on_kill's terminations still running after the triggerer gave up waiting on them (RunWatchTrigger.on_kill).
_ON_KILL_TASKS: set[asyncio.Task] = set()
