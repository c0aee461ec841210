"""``GridRunOperator``: run a training command on spot capacity until it finishes, however many
times the instance is taken away. A tiny operator: the hooks, triggers and the ledger do the work.

One Airflow try is one spot session. An interruption (or a lost instance) ends the try for retry
and the next try resumes from the last committed checkpoint; a script failure ends it for retry
too, but the two have separate budgets (``max_interruptions`` and the task's own ``retries``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from airflow_grid_resume.agent.bundle import build_zipapp
from airflow_grid_resume.agent.errors import UsageError
from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.hooks.spot import LaunchError, SpotLaunchHook, expiry_tag
from airflow_grid_resume.links import GridArtifactsLink, GridInstanceLink
from airflow_grid_resume.spot.bootstrap import AGENT_KEY, SPEC_KEY, render_user_data
from airflow_grid_resume.spot.launch import CAPACITY, FATAL, SPOT, FallbackPolicy, LaunchSpec, explain_fatal, make_pairs
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger, describe_launch, launched_event
from airflow_grid_resume.triggers.run import RunWatchTrigger

STATE_KEY = "grid_resume"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


class SessionInterrupted(AirflowException):
    """The spot instance was reclaimed (or lost): retry, resuming from the last checkpoint."""


class ScriptFailed(AirflowException):
    """The training command itself failed: retry while the task's retries allow."""


def run_key(dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    """A stable, S3-safe name for the run of one task instance: retries find the same run."""
    raw = f"{dag_id}/{task_id}/{run_id}" + (f"/{map_index}" if map_index >= 0 else "")
    safe = "/".join(_UNSAFE.sub("_", part) for part in raw.split("/"))
    return safe if safe == raw else f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def _seconds(value: timedelta | float | int | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


class GridRunOperator(BaseOperator):
    """Run ``command`` in ``workdir`` on EC2 spot capacity, resuming after interruptions."""

    template_fields: Sequence[str] = ("command", "workdir", "artifacts_uri")
    operator_extra_links = (GridInstanceLink(), GridArtifactsLink())
    ui_color = "#ffd27f"

    def __init__(
        self,
        *,
        command: str | Sequence[str],
        artifacts_uri: str,
        instance_types: Sequence[str],
        image_id: str,
        subnet_ids: Sequence[str],
        workdir: str | None = None,
        security_group_ids: Sequence[str] = (),
        iam_instance_profile: str | None = None,
        root_volume_gb: int | None = None,
        key_name: str | None = None,
        instance_tags: dict[str, str] | None = None,
        use_spot: bool = True,
        auto_resume: bool = True,
        max_interruptions: int = 20,
        capacity_wait: timedelta | float = timedelta(hours=6),
        max_run: timedelta | float = timedelta(days=2),
        fallback: dict | None = None,
        agent_args: Sequence[str] = (),
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 2.0,
        instance_check_interval: float = 30.0,
        heartbeat_timeout: float = 90.0,
        boot_timeout: float = 900.0,
        capacity_backoff: tuple[float, float] = (15.0, 300.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not command or (isinstance(command, str) and not command.strip()):
            raise ValueError("command must not be empty: give the training command, e.g. 'python train.py'")
        if not isinstance(artifacts_uri, str) or not artifacts_uri.startswith("s3://"):
            raise ValueError(f"artifacts_uri must be an s3:// URI where run ledgers live, got {artifacts_uri!r}")
        if max_interruptions < 0:
            raise ValueError(f"max_interruptions must be 0 or more, got {max_interruptions}")
        self.command = command
        self.artifacts_uri = artifacts_uri
        self.workdir = workdir
        self.spec = LaunchSpec(  # validates image_id, instance_types, subnet_ids, tags, root volume
            image_id=image_id,
            instance_types=tuple(instance_types or ()),
            subnet_ids=tuple(subnet_ids or ()),
            security_group_ids=tuple(security_group_ids),
            iam_instance_profile=iam_instance_profile,
            root_volume_gb=root_volume_gb,
            key_name=key_name,
            tags=dict(instance_tags or {}),
        )
        self.use_spot = use_spot
        self.auto_resume = auto_resume
        self.max_interruptions = max_interruptions
        self.capacity_wait = _seconds(capacity_wait, "capacity_wait")
        self.max_run = _seconds(max_run, "max_run")
        self.fallback = dict(fallback or {})
        if not use_spot:
            self.fallback = {"after_capacity_failures": 0}
        self.agent_args = list(agent_args)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.instance_check_interval = instance_check_interval
        self.capacity_backoff = (float(capacity_backoff[0]), float(capacity_backoff[1]))
        self.heartbeat_timeout = heartbeat_timeout
        self.boot_timeout = boot_timeout
        # Interruptions are retried too; the task's own ``retries`` stays the budget for failures.
        self.failure_retries = self.retries or 0
        self.retries = self.failure_retries + (max_interruptions if auto_resume else 0)

    # -- helpers ---------------------------------------------------------------------------------
    def _run_uri(self, context: Any) -> str:
        ti = context["ti"]
        key = run_key(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        return f"{self.artifacts_uri.rstrip('/')}/{key}"

    def _ledger(self, run_uri: str) -> RunLedger:
        try:
            location = parse_s3_uri(run_uri, what="artifacts_uri")
        except UsageError as exc:
            raise AirflowFailException(str(exc)) from exc
        return RunLedger(S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).get_conn(), location)

    def _argv(self) -> list[str]:
        return ["bash", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def _prepare(self, ledger: RunLedger, run_uri: str) -> None:
        """Agent, spec and the workdir snapshot, uploaded once per run (a retry finds them)."""
        if ledger.get(ledger.key(SPEC_KEY)) is not None:
            return
        if self.workdir and not os.path.isdir(self.workdir):
            raise AirflowFailException(f"workdir {self.workdir!r} does not exist or is not a directory")
        with tempfile.TemporaryDirectory(prefix="grid-resume-op-") as tmp:
            pyz = build_zipapp(os.path.join(tmp, "agent.pyz"))
            with open(pyz, "rb") as fh:
                ledger.put(ledger.key(AGENT_KEY), fh.read())
        if self.workdir and not ledger.list_manifests():
            result = Syncer(ledger, self.workdir, session=0).sync("snapshot")
            self.log.info("uploaded the workdir snapshot %s: %s", self.workdir, result.summary())
        spec = {"command": self._argv(), "agent_args": self.agent_args, "run_uri": run_uri}
        ledger.put(ledger.key(SPEC_KEY), json.dumps(spec).encode())

    def _history(self, ledger: RunLedger, before: int) -> tuple[int, int]:
        """(interruptions, failures) of the sessions before ``before``, from the ledger's outcomes."""
        interruptions = failures = 0
        for session in ledger.list_sessions():
            if session >= before:
                continue
            outcome = ledger.read_outcome(session) or {"status": "lost"}
            if outcome.get("status") in ("interrupted", "lost"):
                interruptions += 1
            elif outcome.get("status") == "failed":
                failures += 1
        return interruptions, failures

    # -- the lifecycle -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        run_uri = self._run_uri(context)
        ledger = self._ledger(run_uri)
        self._prepare(ledger, run_uri)
        loc = ledger.location
        GridArtifactsLink.persist(
            context=context,
            operator=self,
            region_name=self.region_name or "us-east-1",
            aws_partition="aws",
            bucket=loc.bucket,
            prefix=loc.prefix,
        )
        store = context.get("task_state_store")
        state = (store.get(STATE_KEY) if store else None) or {}
        if state.get("instance_id") and ledger.read_outcome(int(state["session"])) is None:
            instance = (
                SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                .describe_instances([state["instance_id"]])
                .get(state["instance_id"], {})
            )
            if instance.get("State", {}).get("Name") in ("pending", "running"):
                self.log.info("reattaching to session %s on instance %s", state["session"], state["instance_id"])
                return self._watch(context, run_uri, int(state["session"]), state["instance_id"], state)
        sessions = ledger.list_sessions()
        if sessions and (ledger.read_outcome(sessions[-1]) or {}).get("status") == "succeeded":
            # A retry or a clear after success (or Airflow re-running a try whose result it lost):
            # the run is complete in the ledger, so report it instead of training again.
            self.log.info("the run already succeeded in session %d: nothing to run", sessions[-1])
            return self._summary(ledger, run_uri, {"status": "succeeded", "outcome": ledger.read_outcome(sessions[-1])})
        session = max([0, *sessions, int(state.get("session", 0))]) + 1
        interruptions, _failures = self._history(ledger, session)
        first_started = float(state.get("first_started_at") or time.time())
        state = {"session": session, "run_uri": run_uri, "first_started_at": first_started}
        if store:
            store.set(STATE_KEY, state)
        launched = self._launch_now(run_uri, session, interruptions)
        if launched is not None:
            return self.on_capacity(context, launched)
        self.log.info(
            "session %d of run %s: waiting for %s capacity (%d interruptions so far)",
            session,
            run_uri,
            "spot" if self.use_spot else "on-demand",
            interruptions,
        )
        self.defer(
            trigger=SpotCapacityTrigger(
                run_id=run_uri,
                run_uri=run_uri,
                session=session,
                spec=self.spec.as_dict(),
                started_at=time.time(),
                max_wait=self.capacity_wait or 6 * 3600,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                fallback=self.fallback or None,
                interruptions=interruptions,
                backoff_base=self.capacity_backoff[0],
                backoff_max=self.capacity_backoff[1],
            ),
            method_name="on_capacity",
        )

    def _launch_now(self, run_uri: str, session: int, interruptions: int) -> dict | None:
        """One round over the pairs from the worker: with capacity at hand, no capacity deferral is
        needed (and no trigger fires seconds after deferring). None means: wait in the trigger."""
        hook = SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        started_at = time.time()
        existing = hook.find_session_instance(run_uri, session)
        if existing is not None:
            return launched_event(existing, None, session=session, started_at=started_at, reused=True, rounds=0)
        try:
            zones = hook.subnet_zones(list(self.spec.subnet_ids))
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise AirflowFailException(explain_fatal(str(err.get("Code")), str(err.get("Message", exc)))) from exc
        lifecycle = FallbackPolicy(**self.fallback).lifecycle(
            capacity_failures_in_a_row=0, interruptions=interruptions, waited_seconds=0
        )
        user_data = render_user_data(run_uri, session, self.region_name)
        expires_at = expiry_tag(started_at, self.spec.expiry_hours)
        for pair in make_pairs(self.spec.instance_types, zones):
            try:
                instance = hook.launch(
                    self.spec,
                    pair,
                    lifecycle=lifecycle,
                    run_id=run_uri,
                    session=session,
                    user_data=user_data,
                    expires_at=expires_at,
                )
            except LaunchError as exc:
                if exc.kind == FATAL:
                    raise AirflowFailException(explain_fatal(exc.code, exc.message)) from exc
                self.log.info("no %s capacity for %s in %s (%s)", lifecycle, pair.instance_type, pair.zone, exc.code)
                if exc.kind == CAPACITY:
                    continue
                break
            price = hook.spot_price(pair.instance_type, pair.zone) if lifecycle == SPOT else None
            return launched_event(
                instance,
                price,
                session=session,
                started_at=started_at,
                reused=False,
                rounds=1,
                lifecycle=lifecycle,
                pair=pair,
            )
        return None

    def on_capacity(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        if event.get("status") != "launched":
            raise AirflowFailException(f"session {session}: {event.get('message') or event}")
        store = context.get("task_state_store")
        state = (store.get(STATE_KEY) if store else None) or {"session": session, "first_started_at": time.time()}
        state.update(instance_id=event["instance_id"], launched_at=time.time(), launch=event)
        if store:
            store.set(STATE_KEY, state)
        run_uri = self._run_uri(context)
        if event.get("rounds", 1) > 1 or event.get("waited_seconds", 0) > 60:
            # The capacity trigger's own log is replaced by the next deferral's: keep the wait in the task log.
            self.log.info(
                "session %d: waited %.0f s for capacity over %d rounds",
                session,
                float(event.get("waited_seconds", 0)),
                int(event.get("rounds", 1)),
            )
        self.log.info("session %d: %s", session, describe_launch(event))
        return self._watch(context, run_uri, session, event["instance_id"], state)

    def _watch(self, context: Any, run_uri: str, session: int, instance_id: str, state: dict) -> None:
        self._instance_id = instance_id
        GridInstanceLink.persist(
            context=context,
            operator=self,
            region_name=self.region_name or "us-east-1",
            aws_partition="aws",
            instance_id=instance_id,
        )
        deadline = float(state.get("first_started_at", time.time())) + self.max_run if self.max_run else None
        self.defer(
            trigger=RunWatchTrigger(
                run_uri=run_uri,
                session=session,
                instance_id=instance_id,
                launched_at=float(state.get("launched_at", time.time())),
                deadline=deadline,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                poll_interval=self.poll_interval,
                instance_check_interval=self.instance_check_interval,
                heartbeat_timeout=self.heartbeat_timeout,
                boot_timeout=self.boot_timeout,
            ),
            method_name="on_session_end",
        )

    def on_session_end(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        status = event.get("status")
        run_uri = self._run_uri(context)
        ledger = self._ledger(run_uri)
        interruptions, failures = self._history(ledger, session + 1)
        if status == "succeeded":
            return self._summary(ledger, run_uri, event)
        if status == "timeout":
            raise AirflowFailException(
                f"max_run ({self.max_run:.0f} s) reached in session {session}: the instance was terminated"
            )
        if status in ("interrupted", "lost"):
            what = "interrupted" if status == "interrupted" else f"lost ({event.get('reason')})"
            if not self.auto_resume:
                raise AirflowFailException(f"session {session} was {what} and auto_resume is off")
            if interruptions > self.max_interruptions:
                raise AirflowFailException(
                    f"interruption budget exhausted: {interruptions} interruptions > max_interruptions="
                    f"{self.max_interruptions} (session {session} was {what})"
                )
            raise SessionInterrupted(
                f"session {session} was {what}: the next try resumes from the last checkpoint "
                f"({interruptions} of {self.max_interruptions} interruptions used)"
            )
        outcome = event.get("outcome") or {}
        tail = "\n".join(outcome.get("tail") or [])
        if failures > self.failure_retries:
            raise AirflowFailException(
                f"script failure budget exhausted: {failures} failures > retries={self.failure_retries}. "
                f"Session {session}: {outcome.get('reason')}\n{tail}"
            )
        raise ScriptFailed(f"session {session} failed: {outcome.get('reason')}\n{tail}")

    def _summary(self, ledger: RunLedger, run_uri: str, event: dict) -> dict:
        sessions = ledger.list_sessions()
        statuses = [(ledger.read_outcome(s) or {"status": "lost"}).get("status") for s in sessions]
        return {
            "run_uri": run_uri,
            "sessions": len(sessions),
            "interruptions": sum(1 for s in statuses if s in ("interrupted", "lost")),
            "failures": sum(1 for s in statuses if s == "failed"),
            "final_outcome": event.get("status"),
            "last_manifest": (event.get("outcome") or {}).get("manifest"),
        }

    def on_kill(self) -> None:
        """Killed while on a worker (between launch and defer): never leave the instance running.
        While deferred, the run trigger's ``on_kill`` does the same."""
        instance_id = getattr(self, "_instance_id", None)
        if instance_id:
            self.log.warning("task killed: terminating instance %s", instance_id)
            SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).terminate([instance_id])


__all__ = ["GridRunOperator", "ScriptFailed", "SessionInterrupted", "run_key"]
