"""Running the sessions: a local moto S3, one metadata service and one real agent process per session.

The workdir is uploaded as session 0 of two runs (as the operator does), one for the reference and
one for the interrupted chain; every session restores into a fresh, empty directory at the same
absolute path, as a new instance would (checkpoints that record absolute paths, as Lightning's do,
then match). The command runs under the probe (``verify.probe``), which times it from inside the
agent's process group. Everything started here is stopped, and every temporary directory removed,
before ``run()`` returns or raises; the agents and the local S3 also end if verify itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import boto3
from botocore.config import Config

from airflow_grid_resume.agent.progress import is_checkpoint_line
from airflow_grid_resume.agent.scan import PathFilter
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.emulator.imds import MetadataService
from airflow_grid_resume.emulator.moto_server import MotoServer, die_with_parent
from airflow_grid_resume.ledger.manifest import Manifest
from airflow_grid_resume.ledger.records import Outcome
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.verify.chaos import (
    FLOOR_SECONDS,
    NOTICE_MARGIN_SECONDS,
    allowed_after_sigterm,
    next_offset,
    plan_points,
    progress_span,
    progress_target,
    startup_seconds,
)
from airflow_grid_resume.verify.churn import ChurnReport, analyse, snapshot
from airflow_grid_resume.verify.contents import compare_contents
from airflow_grid_resume.verify.outputs import OutputDiff, diff_outputs, file_hashes
from airflow_grid_resume.verify.probe import USER_TMPDIR, read_record
from airflow_grid_resume.verify.records import SessionRecord, progress_reader

AGENT_PREFIX = "[grid-resume]"
# The agent's warnings for a capture at a checkpoint marker it could not commit (agent/markers.py, agent/sync.py).
DROPPED_CAPTURE = re.compile(r"checkpoint marker \d+: not used|changed while the marker sync read it")
TAIL_LINES = 40
POLL = 0.02
IMDS_POLL = 0.2  # the agents' --imds-poll: how late after its posting a notice is seen
MIN_WORK_SHARE = 0.03  # each interrupted session works at least this share of the reference
AGENT_SIGNAL_GRACE = 5.0  # how long the agent lets the command exit when verify itself stops the agent


@dataclass(frozen=True)
class VerifyConfig:
    command: tuple[str, ...]
    workdir: str = "."
    interruptions: int = 3
    seed: int = 0
    notice_seconds: float = 120.0
    outputs: tuple[str, ...] = ()
    compare_command: tuple[str, ...] = ()  # compares an output whose bytes differ: CMD REFERENCE RESUMED
    ignore_keys: tuple[str, ...] = ()  # keys of torch files not compared, as the report prints them
    progress_regex: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    large_bytes: int = 100 * 1024 * 1024
    timeout: float = 3600.0
    sync_interval: float = 300.0
    show_output: bool = False
    keep: bool = False
    s3_endpoint: str | None = None  # an S3-compatible endpoint already running (tests); default: start moto

    @property
    def sync_reserve(self) -> float:
        """The agent's --sync-reserve: its default (10 s), less for short test notices."""
        return min(10.0, max(0.5, self.notice_seconds / 4))

    @property
    def min_grace(self) -> float:
        return min(5.0, max(0.5, self.notice_seconds / 2))

    @property
    def allowed_seconds(self) -> float:
        """At most how long the agent lets the command run after SIGTERM (the notice time has 1 s resolution)."""
        return max(self.min_grace, self.notice_seconds - self.sync_reserve)

    def allowed_for(self, work_left: float, startup: float = 0.0) -> float:
        """The time after SIGTERM a session gets when about ``work_left`` seconds of work remain."""
        return allowed_after_sigterm(work_left, self.allowed_seconds, startup)

    @property
    def agent_min_grace(self) -> float:
        return min(self.min_grace, FLOOR_SECONDS)


@dataclass
class VerifyResult:
    config: VerifyConfig
    reference: SessionRecord
    chain: list[SessionRecord] = field(default_factory=list)
    points: list[float] = field(default_factory=list)
    startup: float = 0.0
    outputs: OutputDiff | None = None
    churn: ChurnReport | None = None
    snapshot: str = ""
    kept_dir: str | None = None
    checkpoints: dict[str, dict] = field(default_factory=dict)  # the chain's manifests: name -> extra


class Verifier:
    """``Verifier(config).run()``: the reference run, then the interrupted chain; returns what was measured."""

    def __init__(self, config: VerifyConfig, say: Callable[[str], None] | None = None) -> None:
        if not config.command:
            raise ValueError("no command given: put the training command after '--'")
        if not os.path.isdir(config.workdir):
            raise ValueError(f"--workdir {config.workdir} is not a directory")
        self.config = config
        self.say = say or (lambda _msg: None)
        self.read_progress = progress_reader(config.progress_regex)
        self.root = ""
        self.instance = ""  # the one workdir path every session uses, emptied in between
        self.env: dict[str, str] = {}

    def run(self) -> VerifyResult:
        with contextlib.ExitStack() as stack:
            self.root = tempfile.mkdtemp(prefix="grid-resume-verify-")
            if self.config.keep:
                self.say(f"keeping {self.root}")
            else:
                stack.callback(shutil.rmtree, self.root, True)
            os.makedirs(os.path.join(self.root, "tmp"))
            os.makedirs(os.path.join(self.root, "probe"))
            self.instance = os.path.join(self.root, "instance")
            endpoint = self.config.s3_endpoint or stack.enter_context(MotoServer(tied_to_parent=True)).endpoint_url
            self.env = self._agent_env(endpoint)
            client = _s3_client(endpoint)
            bucket = f"grid-resume-verify-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
            return self._run(client, bucket)

    def _run(self, client: Any, bucket: str) -> VerifyResult:
        cfg = self.config
        reference_uri, chain_uri = f"s3://{bucket}/reference", f"s3://{bucket}/interrupted"
        reference_ledger = RunLedger(client, parse_s3_uri(reference_uri))
        chain_ledger = RunLedger(client, parse_s3_uri(chain_uri))
        path_filter = PathFilter(list(cfg.include), list(cfg.exclude))
        summary = ""
        for ledger in (reference_ledger, chain_ledger):
            summary = (
                Syncer(ledger, os.path.abspath(cfg.workdir), session=0, path_filter=path_filter)
                .sync("snapshot")
                .summary()
            )
        self.say(f"snapshot of {os.path.abspath(cfg.workdir)}: {summary}")

        self.say("reference run (no interruption)...")
        reference = self._session("reference", reference_uri, reference_ledger, 1, None, cfg.timeout)
        result = VerifyResult(cfg, reference, snapshot=summary, kept_dir=self.root if cfg.keep else None)
        self.say(f"reference: {reference.status} in {_secs(reference.duration)}")
        if reference.status != "succeeded" or reference.duration is None:
            return result
        steps = progress_span(reference)
        margin_steps = 0.0
        if steps is not None and reference.started_at is not None:
            # Progress lines say when the work starts: the first one, less the step it reports.
            first_at, ref_last_at = reference.progress[0][0], reference.progress[-1][0]
            step = (ref_last_at - first_at) / max(1.0, steps[1] - steps[0])
            result.startup = max(0.0, min(first_at - reference.started_at - step, reference.duration))
            margin_steps = NOTICE_MARGIN_SECONDS / max(step, 1e-6)
        else:
            result.startup = startup_seconds(reference.first_output_after, reference.duration)
        work = max(0.01, reference.duration - result.startup)
        result.points = plan_points(cfg.seed, cfg.interruptions, work)
        # A resumed session that neither ends nor is stopped hangs: it gets three times the reference.
        limit = max(5.0, 3 * reference.duration) + cfg.allowed_seconds + cfg.sync_reserve + 5
        session, done, reached = 0, 0.0, None
        for point in result.points:
            session += 1
            offset = next_offset(point, done, result.startup, MIN_WORK_SHARE * work, work, IMDS_POLL)
            target = None
            if steps is not None:  # the script prints progress: interrupt at a step, immune to the machine's speed
                target = progress_target(point / work, steps, reached, margin_steps)
                left = work * max(0.0, steps[1] - target) / max(1.0, steps[1] - steps[0])
                allowed = cfg.allowed_for(left, result.startup)
                self.say(f"session {session}: notice at step {target:g}, {allowed:.1f} s to exit...")
            else:
                allowed = cfg.allowed_for(work - done - max(0.0, offset - result.startup), result.startup)
                self.say(f"session {session}: notice {offset:.2f} s after the command starts, {allowed:.1f} s to exit")
            record = self._session(
                f"session {session}",
                chain_uri,
                chain_ledger,
                session,
                offset,
                limit,
                allowed + cfg.sync_reserve,
                result.startup,
                target,
            )
            if record.progress:
                reached = max(record.progress_values + ([reached] if reached is not None else []))
            result.chain.append(record)
            self.say(f"session {session}: {record.status}")
            if record.ran_before_sigterm is not None:
                record.work_left = max(0.0, work - done - max(0.0, record.ran_before_sigterm - result.startup))
            if not (record.interrupted and record.status == "interrupted"):
                break  # finished before its point, crashed or hung: the chain ends here
            done += max(0.0, (record.ran_before_stop or 0.0) - result.startup)
        else:
            session += 1
            self.say(f"session {session}: no interruption, to the end...")
            record = self._session(f"session {session}", chain_uri, chain_ledger, session, None, limit)
            result.chain.append(record)
            self.say(f"session {session}: {record.status} in {_secs(record.duration)}")
        finished = result.chain[-1].status == "succeeded"
        if finished:
            reference_final, chain_final = _newest(reference_ledger), _newest(chain_ledger)
            result.outputs = diff_outputs(file_hashes(reference_final), file_hashes(chain_final), cfg.outputs)
            if result.outputs.differ and reference_final is not None and chain_final is not None:
                result.outputs = compare_contents(
                    result.outputs,
                    [(reference_ledger, reference_final), (chain_ledger, chain_final)],
                    os.path.join(self.root, "compare"),
                    cfg.compare_command,
                    self.say,
                    cfg.ignore_keys,
                )
        manifests = [chain_ledger.read_manifest(m) for m in reversed(chain_ledger.list_manifests()) if m.session >= 1]
        result.churn = analyse([snapshot(m) for m in manifests], cfg.large_bytes)
        result.checkpoints = {m.name: m.extra for m in manifests}
        return result

    # -- one session -------------------------------------------------------------------------
    def _session(
        self,
        label: str,
        run_uri: str,
        ledger: RunLedger,
        expected: int,
        offset: float | None,
        timeout: float,
        notice_in: float | None = None,
        startup: float = 0.0,
        target: float | None = None,
    ) -> SessionRecord:
        cfg = self.config
        record = SessionRecord(label, planned_offset=None if target is not None else offset, planned_step=target)
        base = os.path.join(self.root, "probe", re.sub(r"\W+", "-", label))
        workdir = self.instance  # a new instance: the same path, nothing in it
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        start: dict | None = None
        agent: subprocess.Popen | None = None
        try:
            with MetadataService(instance_id=f"i-verify{uuid.uuid4().hex[:9]}") as imds:
                with self._agent(run_uri, workdir, imds.url, base) as agent:
                    collector = _Collector(agent, self.read_progress, label, self.say if cfg.show_output else None)
                    try:
                        deadline = time.monotonic() + timeout
                        start = _wait_for(lambda: read_record(f"{base}.start.json"), agent, deadline)
                        if start and offset is not None:
                            notice = cfg.notice_seconds if notice_in is None else notice_in
                            when = float(start["started_at"]) + offset
                            if target is not None:
                                _wait_for(lambda: collector.reached(target), agent, deadline)
                                when = time.time()
                            elif startup > 0:
                                # Counted from this session's first output line: a start slower than the
                                # reference's must not move the SIGTERM before the script's handler exists.
                                first = _wait_for(lambda: collector.first_output_at, agent, deadline)
                                if first is not None:
                                    when = max(when, first + offset - startup)
                            self._interrupt_at(when, agent, imds, record, notice)
                        try:
                            agent.wait(max(0.1, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            record.timed_out = True
                            self.say(f"{label}: no end after {timeout:.0f} s: stopping it")
                    finally:
                        self._stop(agent)
                        record.agent_ended_at = time.time()
                        collector.close(record)
                record.agent_exit = agent.returncode
        finally:
            start = start or read_record(f"{base}.start.json")
            if agent is not None and (record.timed_out or agent.returncode is None or agent.returncode < 0):
                _kill_group((start or {}).get("pgid"))  # the agent was killed: its command may outlive it
            if not cfg.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        record.notice_in = notice_in if offset is not None else None
        end = read_record(f"{base}.end.json") or {}
        sigterm = read_record(f"{base}.sigterm.json") or {}
        if start:
            record.session = int(start.get("session") or expected)
            record.started_at = float(start["started_at"])
        record.session = record.session or expected
        record.sigterm_at = sigterm.get("sigterm_at") or end.get("sigterm_at")
        record.exited_at = end.get("exited_at")
        record.returncode = end.get("returncode")
        record.shell_returncode = end.get("shell_returncode")
        record.outcome = ledger.read_record(Outcome, record.session)
        return record

    @contextlib.contextmanager
    def _agent(self, run_uri: str, workdir: str, imds_url: str, base: str) -> Iterator[subprocess.Popen]:
        """The agent as a child process in its own session; on exit from the block it is stopped
        (SIGTERM, which it forwards to the command, then SIGKILL) if it still runs."""
        cfg = self.config
        argv = [
            sys.executable,
            "-m",
            "airflow_grid_resume.agent",
            "--run-uri",
            run_uri,
            "--workdir",
            workdir,
            "--imds-endpoint",
            imds_url,
            "--imds-poll",
            str(IMDS_POLL),
            "--log-interval",
            "0.5",
            "--heartbeat-interval",
            "5",
            "--sync-interval",
            str(cfg.sync_interval),
            "--sync-reserve",
            str(cfg.sync_reserve),
            "--min-grace",
            str(cfg.agent_min_grace),
            "--signal-grace",
            str(min(cfg.notice_seconds, AGENT_SIGNAL_GRACE)),
            "--unwatched-timeout",
            "0",  # nobody (no Airflow trigger) watches these sessions, and that is fine
            *[arg for glob in cfg.include for arg in ("--include", glob)],
            *[arg for glob in cfg.exclude for arg in ("--exclude", glob)],
            "--",
            sys.executable,
            "-m",
            "airflow_grid_resume.verify.probe",
            base,
            "--",
            *cfg.command,
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            # If verify is killed (SIGKILL, OOM), its agents die too, and each probe then kills its command's
            # process group: nothing is left running against an S3 that is gone.
            preexec_fn=_agent_dies_with_verify,
        )
        try:
            yield proc
        finally:
            self._stop(proc)

    def _interrupt_at(
        self, when: float, agent: subprocess.Popen, imds: MetadataService, record: SessionRecord, notice: float
    ) -> None:
        """Post the spot notice, reclaiming ``notice`` seconds later, on this session's metadata service at
        ``when`` (epoch), unless the session already ended."""
        while agent.poll() is None and time.time() < when:
            time.sleep(min(POLL, max(0.0, when - time.time())))
        if agent.poll() is None:
            imds.schedule_notice(in_seconds=notice)
            record.notice_posted_at = time.time()

    def _stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to a running agent (it stops its command as on a notice), SIGKILL if it lingers or
        if verify itself is interrupted meanwhile (a second Ctrl-C must not leave it running)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(AGENT_SIGNAL_GRACE + self.config.sync_reserve + 30)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                proc.wait()

    def _agent_env(self, endpoint: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
        env.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                # A killed agent cannot remove its state dir: keep it under ours. The probe gives the command
                # the user's own TMPDIR back (a deep one breaks multiprocessing's sockets: AF_UNIX path too long).
                "TMPDIR": os.path.join(self.root, "tmp"),
                USER_TMPDIR: os.environ.get("TMPDIR", ""),
            }
        )
        return env


class _Collector:
    """Reads the agent's stdout and stderr as they come: the command's lines (the agent passes them
    through) are timestamped, scanned for progress numbers and kept as a tail; the agent's own
    ``[grid-resume]`` lines are kept apart for diagnostics."""

    def __init__(
        self,
        proc: subprocess.Popen,
        read_progress: Callable[[str], float | None],
        label: str,
        echo: Callable[[str], None] | None,
    ) -> None:
        self.read_progress = read_progress
        self.label = label
        self.echo = echo
        self.lock = threading.Lock()
        self.first_output_at: float | None = None
        self.markers = 0
        self.markers_dropped = 0
        self.progress: list[tuple[float, float]] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.agent_lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.threads = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (proc.stdout, proc.stderr)
            if stream is not None
        ]
        self.streams = [proc.stdout, proc.stderr]
        for thread in self.threads:
            thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            now = time.time()
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self.lock:
                if line.startswith(AGENT_PREFIX):
                    self.agent_lines.append(line)
                    self.markers_dropped += bool(DROPPED_CAPTURE.search(line))
                else:
                    if self.first_output_at is None:
                        self.first_output_at = now
                    self.tail.append(line[-1000:])
                    for part in line.split("\r"):  # progress bars rewrite one line with \r
                        self.markers += is_checkpoint_line(part)
                        value = self.read_progress(part)
                        if value is not None:
                            self.progress.append((now, value))
            if self.echo:
                self.echo(f"  [{self.label}] {line}")

    def reached(self, target: float) -> bool:
        """Whether the command has reported progress ``target`` or more."""
        with self.lock:
            return any(value >= target for _, value in self.progress[-50:])

    def close(self, record: SessionRecord) -> None:
        """Wait for the pipes to drain (the agent has exited or is being stopped), then fill ``record``."""
        for thread in self.threads:
            thread.join(timeout=60)
        for stream in self.streams:
            if stream is not None:
                stream.close()
        with self.lock:
            record.first_output_at = self.first_output_at
            record.progress = list(self.progress)
            record.tail = list(self.tail)
            record.agent_lines = list(self.agent_lines)
            record.markers = self.markers
            record.markers_dropped = self.markers_dropped


def _agent_dies_with_verify() -> None:
    die_with_parent(signal.SIGKILL)


def _wait_for(read: Callable[[], Any], proc: subprocess.Popen, deadline: float) -> Any:
    while time.monotonic() < deadline:
        found = read()
        if found or proc.poll() is not None:
            return found or read()
        time.sleep(POLL)
    return None


def _kill_group(pgid: object) -> None:
    """Whatever is left of the command's process group after its agent ended (only after a kill)."""
    if isinstance(pgid, int) and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _newest(ledger: RunLedger) -> Manifest | None:
    stored = ledger.list_manifests()
    return ledger.read_manifest(stored[0]) if stored else None


def _s3_client(endpoint: str) -> Any:
    """A client for the local S3 only: explicit endpoint and test keys, nothing from the user's AWS setup."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(retries={"mode": "standard", "max_attempts": 10}))


def _secs(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f} s"
