"""``GridRunOperator``: run a training command on spot capacity until it finishes, however many
times the instance is taken away. A tiny operator: the hooks, triggers and the ledger do the work.

One Airflow try is one spot session. An interruption (or a lost instance) ends the try for retry
and the next try resumes from the last committed checkpoint; a script failure ends it for retry
too, but the two have separate budgets (``max_interruptions`` and the task's own ``retries``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import partial as sdk_partial
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError

from airflow_grid_resume.agent.bundle import build_zipapp
from airflow_grid_resume.agent.errors import UsageError
from airflow_grid_resume.agent.gc import DEFAULT_GRACE_SECONDS, collect_garbage
from airflow_grid_resume.agent.ledger import RunLedger
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.agent.uri import parse_s3_uri
from airflow_grid_resume.hooks.spot import LaunchError, SpotLaunchHook, expiry_tag, launch_error
from airflow_grid_resume.links import GridArtifactsLink, GridInstanceLink
from airflow_grid_resume.retry import InterruptionRetryPolicy, ScriptFailed, SessionInterrupted
from airflow_grid_resume.spot.bootstrap import AGENT_KEY, SPEC_KEY, render_user_data
from airflow_grid_resume.spot.launch import CAPACITY, FATAL, SPOT, FallbackPolicy, LaunchSpec, explain_fatal, make_pairs
from airflow_grid_resume.spot.prices import on_demand_price
from airflow_grid_resume.summary import INTERRUPTED, read_records, session_status, summarize
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger, describe_launch, launched_event
from airflow_grid_resume.triggers.run import RunWatchTrigger

STATE_KEY = "grid_resume"
FINAL_KEY = "final.json"
RERUN_CHOICES = ("resume", "fresh")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def run_key(dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    """A stable, S3-safe name for the run of one task instance: retries find the same run."""
    raw = f"{dag_id}/{task_id}/{run_id}" + (f"/{map_index}" if map_index >= 0 else "")
    safe = "/".join(_UNSAFE.sub("_", part) for part in raw.split("/"))
    return safe if safe == raw else f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def _seconds(value: timedelta | float | int | None, name: str, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'0 or more' if allow_zero else 'positive'}, got {value!r}")
    return seconds


def generation_uri(base_uri: str, generation: int) -> str:
    """Where generation ``generation`` of a run lives: a fresh re-run nests under the first one."""
    return base_uri if generation <= 1 else f"{base_uri}/rerun-{generation}"


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
        rerun: str = "resume",
        interruption_retry_delay: timedelta | float = timedelta(0),
        on_interruption_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_demand_prices: Mapping[str, float] | None = None,
        failure_retries: int | None = None,
        keep_checkpoints: int | None = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rerun not in RERUN_CHOICES:
            raise ValueError(f"rerun must be one of {', '.join(map(repr, RERUN_CHOICES))}, got {rerun!r}")
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
        self.rerun = rerun
        self.on_demand_prices = dict(on_demand_prices or {})
        if keep_checkpoints is not None and keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be 1 or more (None keeps all), got {keep_checkpoints!r}")
        self.keep_checkpoints = keep_checkpoints
        for type_, price in self.on_demand_prices.items():
            if not isinstance(price, (int, float)) or price < 0:
                raise ValueError(f"on_demand_prices[{type_!r}] must be a USD-per-hour number, got {price!r}")
        delay = _seconds(interruption_retry_delay, "interruption_retry_delay", allow_zero=True)
        self.interruption_retry_delay = timedelta(seconds=delay or 0)
        if callable(on_interruption_callback):
            on_interruption_callback = [on_interruption_callback]
        self.on_interruption_callback = list(on_interruption_callback or [])
        # Interruptions are retried too; the task's own ``retries`` stays the budget for failures.
        # (``failure_retries`` is given only by ``partial()``, which already added the interruptions.)
        if failure_retries is None:
            self.failure_retries = self.retries or 0
            self.retries = self.failure_retries + (max_interruptions if auto_resume else 0)
        else:
            self.failure_retries = failure_retries
        if not isinstance(self.retry_policy, InterruptionRetryPolicy):
            self.retry_policy = InterruptionRetryPolicy(self.interruption_retry_delay, inner=self.retry_policy)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        """Mapped tasks: the scheduler takes a mapped task's ``retries`` from its partial arguments,
        before any ``__init__`` runs, so the interruption budget is added here as well."""
        op_partial = sdk_partial(cls, **kwargs)
        given = op_partial.kwargs
        if given.get("failure_retries") is None:
            failure = int(given.get("retries") or 0)
            resume = given.get("auto_resume", True)
            given["failure_retries"] = failure
            given["retries"] = failure + (int(given.get("max_interruptions", 20)) if resume else 0)
        return op_partial

    # -- the run in the ledger ----------------------------------------------------------------------
    def _base_uri(self, context: Any) -> str:
        ti = context["ti"]
        key = run_key(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        return f"{self.artifacts_uri.rstrip('/')}/{key}"

    def _ledger(self, run_uri: str, client: Any = None) -> RunLedger:
        try:
            location = parse_s3_uri(run_uri, what="artifacts_uri")
        except UsageError as exc:
            raise AirflowFailException(str(exc)) from exc
        if client is None:
            client = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).get_conn()
        return RunLedger(client, location)

    def _current_run(self, base_uri: str) -> tuple[int, RunLedger, dict | None]:
        """The newest generation of this task instance's run, and how it ended (None: not yet)."""
        generation, ledger = 1, self._ledger(base_uri)
        final = ledger.get_json(ledger.key(FINAL_KEY))
        while final is not None:
            newer = self._ledger(generation_uri(base_uri, generation + 1), ledger.client)
            if newer.get_json(newer.key(SPEC_KEY)) is None:
                break
            generation, ledger = generation + 1, newer
            final = ledger.get_json(ledger.key(FINAL_KEY))
        return generation, ledger, final

    def _run_ledger(self, context: Any, event: dict) -> tuple[str, RunLedger]:
        run_uri = event.get("run_uri") or self._base_uri(context)
        return run_uri, self._ledger(run_uri)

    def _argv(self) -> list[str]:
        return ["bash", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def _prepare(self, ledger: RunLedger, run_uri: str) -> None:
        """Agent and workdir snapshot once per run (a retry finds them); the spec whenever it changed,
        so a failed run cleared after fixing its command resumes with the fixed one."""
        spec = {"command": self._argv(), "agent_args": self.agent_args, "run_uri": run_uri}
        stored = ledger.get_json(ledger.key(SPEC_KEY))
        if stored is not None:
            if {k: stored.get(k) for k in spec} != spec:
                self.log.info("the command changed since the last session: now %s", spec["command"])
                ledger.put_json(ledger.key(SPEC_KEY), spec)
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
        ledger.put_json(ledger.key(SPEC_KEY), spec)

    @staticmethod
    def _history(ledger: RunLedger, before: int) -> tuple[int, int]:
        """(interruptions, failures) since the run last ended (a clear gives fresh budgets), from the
        ledger's records of the sessions before ``before``."""
        final = ledger.get_json(ledger.key(FINAL_KEY)) or {}
        after = int(final.get("session") or 0) if final.get("status") != "succeeded" else 0
        interruptions = failures = 0
        for session in ledger.list_sessions():
            if not after < session < before:
                continue
            outcome = ledger.read_outcome(session)  # the Airflow side's verdict only matters without one
            closed = None if outcome else ledger.get_json(ledger.session_key(session, "closed.json"))
            status = session_status({"outcome": outcome, "closed": closed})
            if status in INTERRUPTED:
                interruptions += 1
            elif status == "failed":
                failures += 1
        return interruptions, failures

    def _end_run(self, ledger: RunLedger, session: int, status: str, reason: str) -> None:
        """Record that the run ended (a later clear of the task starts from here)."""
        ledger.put_json(
            ledger.key(FINAL_KEY), {"status": status, "session": session, "reason": reason, "at": time.time()}
        )

    def _retain(self, ledger: RunLedger) -> None:
        """Keep the newest ``keep_checkpoints`` of a run that succeeded (grid-resume gc --apply);
        a failure costs only storage, never the task."""
        if self.keep_checkpoints is None:
            return
        try:
            plan = collect_garbage(ledger, keep=self.keep_checkpoints, apply=True)
        except Exception as exc:
            self.log.warning("checkpoint retention skipped (the run is unaffected): %s", exc)
            return
        for line in plan.lines(str(ledger.location), DEFAULT_GRACE_SECONDS, applied=True):
            self.log.info("retention: %s", line)

    def _fail(self, ledger: RunLedger, session: int, message: str) -> AirflowFailException:
        self._end_run(ledger, session, "failed", message.splitlines()[0])
        return AirflowFailException(message)

    # -- the lifecycle -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        base_uri = self._base_uri(context)
        generation, ledger, final = self._current_run(base_uri)
        if final is not None and self.rerun == "fresh":
            generation += 1
            ledger = self._ledger(generation_uri(base_uri, generation), ledger.client)
            self.log.info(
                "the run ended (%s) before; rerun='fresh': starting over as %s", final.get("status"), ledger.location
            )
        elif final is not None and final.get("status") == "succeeded":
            self.log.info("the run already succeeded in session %s; rerun='resume': nothing to run", final["session"])
            return self._summary(ledger, {"status": "succeeded"})
        elif final is not None:
            self.log.info(
                "the run failed before (%s); rerun='resume': resuming from its last checkpoint with fresh budgets",
                final.get("reason"),
            )
        run_uri = generation_uri(base_uri, generation)
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
        if state.get("run_uri") != run_uri:
            state = {}
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
        last_outcome = ledger.read_outcome(sessions[-1]) if sessions else None
        if (last_outcome or {}).get("status") == "succeeded":
            # Airflow re-running a try whose result it lost (the run ended before it was recorded):
            # the run is complete in the ledger, so report it instead of training again.
            self.log.info("the run already succeeded in session %d: nothing to run", sessions[-1])
            self._end_run(ledger, sessions[-1], "succeeded", "succeeded")
            return self._summary(ledger, {"status": "succeeded", "outcome": last_outcome})
        session = max([0, *sessions, int(state.get("session", 0))]) + 1
        interruptions, _failures = self._history(ledger, session)
        first_started = float(state.get("first_started_at") or time.time())
        left = first_started + self.max_run - time.time() if self.max_run else None
        if left is not None and left <= 0:
            raise self._fail(ledger, session - 1, f"max_run ({self.max_run:.0f} s) reached before session {session}")
        state = {"session": session, "run_uri": run_uri, "first_started_at": first_started}
        if store:
            store.set(STATE_KEY, state)
        spec = self._resolved_spec()
        launched = self._launch_now(spec, run_uri, session, interruptions)
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
                spec=spec.as_dict(),
                started_at=time.time(),
                max_wait=min(self.capacity_wait or 6 * 3600, left or float("inf")),  # max_run bounds waits too
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                fallback=self.fallback or None,
                interruptions=interruptions,
                backoff_base=self.capacity_backoff[0],
                backoff_max=self.capacity_backoff[1],
                deferred_at=time.time(),
            ),
            method_name="on_capacity",
        )

    def _resolved_spec(self) -> LaunchSpec:
        """The launch spec with what only AWS knows filled in (no I/O at parse time)."""
        if not self.spec.root_volume_gb or self.spec.root_device_name:
            return self.spec
        hook = SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        try:
            device = hook.root_device_name(self.spec.image_id)
        except ClientError as exc:
            err = launch_error(exc)
            raise AirflowFailException(explain_fatal(err.code, err.message)) from exc
        return dataclasses.replace(self.spec, root_device_name=device)

    def _launch_now(self, spec: LaunchSpec, run_uri: str, session: int, interruptions: int) -> dict | None:
        """One round over the pairs from the worker: with capacity at hand, no capacity deferral is
        needed (and no trigger fires seconds after deferring). None means: wait in the trigger."""
        hook = SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        started_at = time.time()
        existing = hook.find_session_instance(run_uri, session)
        if existing is not None:
            event = launched_event(existing, None, session=session, started_at=started_at, reused=True, rounds=0)
            return {**event, "run_uri": run_uri}
        try:
            zones = hook.subnet_zones(list(spec.subnet_ids))
        except ClientError as exc:
            err = launch_error(exc)
            raise AirflowFailException(explain_fatal(err.code, err.message)) from exc
        lifecycle = FallbackPolicy(**self.fallback).lifecycle(
            capacity_failures_in_a_row=0, interruptions=interruptions, waited_seconds=0
        )
        user_data = render_user_data(run_uri, session, self.region_name)
        expires_at = expiry_tag(started_at, spec.expiry_hours)
        for pair in make_pairs(spec.instance_types, zones):
            try:
                instance = hook.launch(
                    spec,
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
            price = self._spot_price(hook, pair) if lifecycle == SPOT else None
            event = launched_event(
                instance,
                price,
                session=session,
                started_at=started_at,
                reused=False,
                rounds=1,
                lifecycle=lifecycle,
                pair=pair,
            )
            return {**event, "run_uri": run_uri}
        return None

    def _spot_price(self, hook: SpotLaunchHook, pair: Any) -> str | None:
        """The price is for the cost estimate: never fail a session that has its instance over it."""
        try:
            return hook.spot_price(pair.instance_type, pair.zone)
        except Exception as exc:
            self.log.warning("could not read the spot price of %s in %s: %s", pair.instance_type, pair.zone, exc)
            return None

    def on_capacity(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        if event.get("status") != "launched":
            raise AirflowFailException(f"session {session}: {event.get('message') or event}")
        run_uri, ledger = self._run_ledger(context, event)
        store = context.get("task_state_store")
        state = (store.get(STATE_KEY) if store else None) or {"session": session, "first_started_at": time.time()}
        state.update(run_uri=run_uri, instance_id=event["instance_id"], launched_at=time.time(), launch=event)
        if store:
            store.set(STATE_KEY, state)
        for line in event.get("wait_log") or []:
            # The capacity trigger's own log file is replaced by the next deferral's: replay its story here.
            self.log.info("capacity wait: %s", line)
        if event.get("rounds", 1) > 1 or event.get("waited_seconds", 0) > 60:
            self.log.info(
                "session %d: waited %.0f s for capacity over %d rounds",
                session,
                float(event.get("waited_seconds", 0)),
                int(event.get("rounds", 1)),
            )
        self.log.info("session %d: %s", session, describe_launch(event))
        ledger.put_once(
            ledger.session_key(session, "launch.json"),
            json.dumps(
                {
                    **{k: event.get(k) for k in ("instance_id", "instance_type", "zone", "subnet_id", "lifecycle")},
                    "spot_price": float(event["spot_price"]) if event.get("spot_price") else None,
                    "on_demand_price": on_demand_price(event.get("instance_type"), self.on_demand_prices),
                    "launched_at": float(event.get("launched_at") or time.time()),
                    "waited_seconds": event.get("waited_seconds"),
                }
            ).encode(),
        )
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
                deferred_at=time.time(),
            ),
            method_name="on_session_end",
        )

    def on_session_end(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        status = event.get("status")
        _, ledger = self._run_ledger(context, event)
        closed = {"status": status, "reason": event.get("reason"), "instance_id": event.get("instance_id")}
        ledger.put_json(ledger.session_key(session, "closed.json"), {**closed, "at": time.time()})
        if status == "succeeded":
            self._end_run(ledger, session, "succeeded", "succeeded")
            self._retain(ledger)
            return self._summary(ledger, event)
        if status == "timeout":
            message = f"max_run ({self.max_run:.0f} s) reached in session {session}: the instance was terminated"
            raise self._fail(ledger, session, message)
        interruptions, failures = self._history(ledger, session + 1)
        if status in INTERRUPTED:
            what = "interrupted" if status == "interrupted" else f"lost ({event.get('reason')})"
            if not self.auto_resume:
                raise self._fail(ledger, session, f"session {session} was {what} and auto_resume is off")
            if interruptions > self.max_interruptions:
                raise self._fail(
                    ledger,
                    session,
                    f"interruption budget exhausted: {interruptions} interruptions > max_interruptions="
                    f"{self.max_interruptions} (session {session} was {what})",
                )
            self._alert_as_interruption()
            raise SessionInterrupted(
                f"session {session} was {what}: the next try resumes from the last checkpoint "
                f"({interruptions} of {self.max_interruptions} interruptions used)"
            )
        outcome = event.get("outcome") or {"reason": event.get("reason")}
        tail = "\n".join(outcome.get("tail") or [])
        if failures > self.failure_retries:
            raise self._fail(
                ledger,
                session,
                f"script failure budget exhausted: {failures} failures > retries={self.failure_retries}. "
                f"Session {session}: {outcome.get('reason')}\n{tail}",
            )
        raise ScriptFailed(f"session {session} failed: {outcome.get('reason')}\n{tail}")

    def _alert_as_interruption(self) -> None:
        """An interruption is routine on spot: this try's retry runs ``on_interruption_callback``
        instead of ``on_retry_callback`` and sends no retry email. Airflow reads both from the task
        object when the try ends, after this method returns."""
        self.on_retry_callback = list(self.on_interruption_callback)
        self.email_on_retry = False

    def _summary(self, ledger: RunLedger, event: dict) -> dict:
        summary = summarize(read_records(ledger), final_outcome=event.get("status"))
        last = (event.get("outcome") or {}).get("manifest")
        if last is None:  # reported without this session's outcome: the newest committed checkpoint
            newest_first = ledger.list_manifests()
            last = newest_first[0].name if newest_first else None
        return {"run_uri": str(ledger.location), **summary, "last_manifest": last}

    def on_kill(self) -> None:
        """Killed while on a worker (between launch and defer): never leave the instance running.
        While deferred, the run trigger's ``on_kill`` does the same."""
        instance_id = getattr(self, "_instance_id", None)
        if instance_id:
            self.log.warning("task killed: terminating instance %s", instance_id)
            SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).terminate([instance_id])


__all__ = ["GridRunOperator", "ScriptFailed", "SessionInterrupted", "generation_uri", "run_key"]
