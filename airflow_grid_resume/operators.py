"""``GridRunOperator``: run a training command on spot capacity until it finishes, however many
times the instance is taken away. The operator is the Airflow surface (its parameters, ``execute`` and
the methods a deferral resumes in, ``on_kill``): what to do is decided in ``run/`` (``nextstep``,
``verdict``, ``budgets``), launching is ``spot/``, waiting and watching are the triggers.

One Airflow try is one spot session. An interruption (or a lost instance) ends the try for retry
and the next try resumes from the last committed checkpoint; a script failure ends it for retry
too, but the two have separate budgets (``max_interruptions`` and the task's own ``retries``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import Asset, BaseOperator
from airflow.sdk.bases.operator import partial as sdk_partial
from airflow.sdk.definitions.callback import AsyncCallback, SyncCallback
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.agent.bundle import agent_zipapp
from airflow_grid_resume.agent.sync import Syncer
from airflow_grid_resume.alerts import register_deadline_alert
from airflow_grid_resume.asyncaws.ledgerreader import AsyncLedgerReader
from airflow_grid_resume.asyncaws.ratelimit import AsyncTokenBucket
from airflow_grid_resume.ec2.identity import why_not
from airflow_grid_resume.ec2.launch import LaunchSpec, explain_fatal, launch_spec, ssm_parameter
from airflow_grid_resume.ec2.prices import on_demand_price
from airflow_grid_resume.ec2.tags import expiry_tag
from airflow_grid_resume.hooks.base import hook_client
from airflow_grid_resume.hooks.livequeue import LiveQueueHook, QueueRefused
from airflow_grid_resume.hooks.spot import SpotLaunchHook, launch_error
from airflow_grid_resume.ledger import layout
from airflow_grid_resume.ledger.errors import BucketRulesError, UsageError
from airflow_grid_resume.ledger.gc import DEFAULT_GRACE_SECONDS, collect_garbage
from airflow_grid_resume.ledger.records import Closed, Deadline, Launch, Outcome, Spec, Watch, as_dict
from airflow_grid_resume.ledger.status import SessionStatus
from airflow_grid_resume.ledger.store import ConditionalWriteLost, RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions
from airflow_grid_resume.lineage import operator_lineage
from airflow_grid_resume.links import GridArtifactsLink, GridInstanceLink, link_target
from airflow_grid_resume.logtext import log_lines, log_records
from airflow_grid_resume.quiet import quiet_credential_logs
from airflow_grid_resume.retry import InterruptionRetryPolicy, ScriptFailed, SessionInterrupted
from airflow_grid_resume.run.asset import model_asset_uri, model_event_extra, read_final_checkpoint
from airflow_grid_resume.run.budgets import Budgets, first_try_of_cycle
from airflow_grid_resume.run.deadline import LASTED_HOURS, DeadlineContext, LaunchChooser, pool_zones, watch_interval
from airflow_grid_resume.run.ending import ended_status
from airflow_grid_resume.run.keys import run_key
from airflow_grid_resume.run.ledgerio import (
    budget_history,
    deadline_context,
    end_run,
    ensure_agent,
    ensure_spec,
    generation_uri,
    newest_generation,
    plan_session,
    run_view,
)
from airflow_grid_resume.run.nextstep import Launch as LaunchStep
from airflow_grid_resume.run.nextstep import (
    Reattach,
    ReportSucceeded,
    StartFresh,
    choose_generation,
    next_step,
)
from airflow_grid_resume.run.options import RunOptions, seconds
from airflow_grid_resume.run.pace import measure
from airflow_grid_resume.run.pacestore import pace_uri, read_prior, record_run
from airflow_grid_resume.run.summary import read_records, summarize, summary_lines
from airflow_grid_resume.run.verdict import (
    FAIL_RUN,
    NEXT_SESSION,
    REPORT,
    RETRY_INTERRUPTED,
    session_verdict,
    spends_budget,
)
from airflow_grid_resume.spot import fleetstore
from airflow_grid_resume.spot.fleetstore import fleet_uri
from airflow_grid_resume.spot.launcher import PairsUnknown, SessionLauncher, describe_launch
from airflow_grid_resume.spot.regions import region_links, resolve_placements
from airflow_grid_resume.spot.runhistory import read_run_state, record_launch, record_session_end
from airflow_grid_resume.triggers.capacity import SpotCapacityTrigger
from airflow_grid_resume.triggers.run import RunWatchTrigger

STATE_KEY = "grid_resume"
RUN_XCOM = "_grid_resume_run"  # read by the UI plugin (ui/source.py)


class GridRunOperator(BaseOperator):
    """Run ``command`` in ``workdir`` on EC2 spot capacity, resuming after interruptions.

    One Airflow try is one spot session; the task's own ``retries`` is the budget for failures of the script,
    ``max_interruptions`` the budget for interruptions and lost instances (docs/operator.md).

    .. seealso::
        For more information on how to use this operator, take a look at the guide: docs/user-guide.md

    :param command: the training command, the same in every session: a string run as ``bash -c COMMAND`` or a
        list run as argv. (templated)
    :param artifacts_uri: ``s3://bucket/prefix/`` under which each task instance's run ledger lives
        (``<prefix>/<dag_id>/<task_id>/<run_id>[/<map_index>]``). (templated)
    :param instance_types: instance types to try, in order of preference, each in every subnet (may be empty
        with ``instance_requirements``).
    :param instance_requirements: what the job needs, in EC2's own field names (``{"VCpuCount": {"Min": 8},
        "MemoryMiB": {"Min": 32768}, "AcceleratorCount": {"Min": 1, "Max": 1}, "AcceleratorManufacturers":
        ["nvidia"], "AcceleratorTotalMemoryMiB": {"Min": 24576}, "ArchitectureTypes": ["x86_64"]}``), resolved
        per region by GetInstanceTypesFromInstanceRequirements; the types found are tried after
        ``instance_types`` (docs/user-guide.md, "Instance types by what the job needs").
    :param placements: several regions: ``[{"region": "us-west-2", "subnet_ids": [...], "image_id": "ami-..."
        or "resolve:ssm:/aws/service/...", "security_group_ids": [...], "iam_instance_profile": ...}, ...]``, in
        order of preference; instead of ``image_id``, ``subnet_ids``, ``security_group_ids`` and
        ``iam_instance_profile``. The ledger stays in ``artifacts_uri``'s bucket (docs/user-guide.md, "Several
        regions").
    :param image_id: the AMI (``ami-...``, or ``resolve:ssm:NAME`` for an SSM parameter holding one) the instances
        boot; it needs a python3 >= 3.9 for the agent (docs/user-guide.md, "The AMI").
    :param subnet_ids: subnets to launch in, one per availability zone accepted.
    :param workdir: a directory on the Airflow worker, uploaded at the run's first try as the execution
        directory's first content; None: the command starts in an empty directory. (templated)
    :param security_group_ids: security groups of the instances (none: the VPC's default group).
    :param iam_instance_profile: the instance profile's name or ARN; the instance needs it to reach the bucket.
    :param root_volume_gb: size in GiB of the root volume (gp3), mapped on the AMI's own root device.
    :param key_name: an EC2 key pair, for SSH while debugging.
    :param instance_tags: extra tags on the instances and their volumes (``aws:`` and ``grid-resume:`` are
        reserved).
    :param metadata_hop_limit: IMDSv2's hop limit (``HttpPutResponseHopLimit``, 1 to 64). 2 (default, AWS's advice
        for containers) lets a training script in a Docker container on the instance get the instance profile's
        credentials and the spot notice; 1 keeps the metadata service to the instance's own processes
        (docs/security.md).
    :param use_spot: False runs every session on-demand.
    :param auto_resume: False fails the task on an interruption instead of resuming.
    :param max_interruptions: how many sessions may end by an interruption or a lost instance before the task
        fails; added to the task's ``retries``, which stays the budget for script failures.
    :param capacity_wait: how long one session waits for capacity before the task fails (timedelta or seconds).
    :param max_run: wall-clock limit of the whole run from its first try, waits included (timedelta or seconds);
        past it the instance is terminated and the task fails without retry.
    :param fallback: when to launch a session on-demand instead: ``{"after_capacity_failures": N,
        "after_interruptions": K, "after_wait_seconds": S}``, each optional.
    :param agent_args: extra options for the agent on the instance (docs/agent.md), e.g.
        ``["--sync-interval", "120"]``.
    :param aws_conn_id: the Airflow AWS connection; None uses boto3's default credential chain.
    :param region_name: the AWS region; also exported to the instance as ``AWS_DEFAULT_REGION``.
    :param poll_interval: seconds between the trigger's reads of the run's output until it has seen the agent's
        upload rhythm (then it reads each chunk once, just after it lands).
    :param live_output: how the script's output reaches the task log: ``"sqs"`` (default) through an SQS queue the
        task creates for the run and deletes when it ends (a line arrives within about 4 s; S3 gets the output
        every minute as the durable record), or ``"s3"`` through S3 alone (every 3 s, at about four times the
        requests). Without the SQS permissions (docs/user-guide.md) ``"sqs"`` falls back to S3 with a warning.
    :param log_offset_save_interval: seconds between the trigger's records of how far the task log has the
        output (one S3 PUT each); a triggerer killed outright repeats at most this much output in the task log.
    :param instance_check_interval: seconds between checks that the instance still exists.
    :param heartbeat_timeout: seconds an agent may be silent before its session is declared lost.
    :param boot_timeout: seconds from launch to the first heartbeat before the session is declared lost.
    :param capacity_backoff: first and longest wait between capacity rounds, in seconds (with jitter).
    :param not_found_grace: seconds an instance DescribeInstances does not list is still taken as existing
        (EC2's eventual consistency: a just-launched instance can be unknown for a while) before it is gone.
    :param keep_checkpoints: how many of the newest checkpoints a run that succeeded keeps in S3 (the rest, and
        every object or pack only they referenced, is deleted as ``grid-resume gc --apply`` does); None keeps all.
    :param rerun: what clearing the task does once its run has ended: ``"resume"`` (a failed run resumes from
        its last checkpoint with fresh budgets, a succeeded one is reported again) or ``"fresh"`` (start over
        from ``workdir`` as a new run; the old one stays in S3).
    :param interruption_retry_delay: delay before the try after an interruption (timedelta or seconds); a script
        failure waits the task's ``retry_delay``.
    :param on_interruption_callback: a callable, or a list of them, called instead of ``on_retry_callback`` when a
        try ended by an interruption or a lost instance.
    :param on_demand_prices: USD per hour by instance type (``{"g5.xlarge": 1.006}``), overriding the built-in
        us-east-1 Linux table used for the on-demand side of the cost estimate.
    :param s3_encryption: server-side encryption every write to the bucket asks for, by the agent and the Airflow
        side: ``"aws:kms"``, ``"AES256"`` or None (the bucket's default). Needed when the bucket's policy denies
        uploads without ``x-amz-server-side-encryption`` (docs/user-guide.md, "Buckets with security rules").
    :param s3_kms_key_id: the KMS key (id, alias or ARN) for ``s3_encryption="aws:kms"``; None: the account's
        ``aws/s3`` key. The instance role and the Airflow connection need kms:GenerateDataKey and kms:Decrypt on it.
    :param s3_checksum: a flexible checksum (``"CRC32"`` or ``"SHA256"``) sent with every upload; needed on a bucket
        with Object Lock default retention, which refuses uploads without one. None: none sent (every object
        already carries the ledger's own sha256).
    :param model_asset: the trained model as an Airflow Asset (an ``Asset`` or its ``s3://bucket/key`` URI), added
        to the task's ``outlets``: a run that succeeds emits an asset event whose extra says where the final
        checkpoint is and what the run took (docs/user-guide.md, "The model as an Asset").
    :param deadline: when the run must be done: a timezone-aware ``datetime``, a ``timedelta`` from the run's first
        try, or a template rendering to an ISO datetime (``"{{ data_interval_end + macros.timedelta(hours=7) }}"``).
        A deadline policy then chooses spot (in which zone), on-demand or waiting at every launch and capacity
        round, and stops an on-demand session to go back to spot when that is safe; the fallback counters are not
        used (docs/user-guide.md, "Deadlines"). (templated)
    :param expected_runtime: with ``deadline``: how long the training takes on the chosen hardware without
        interruptions (timedelta or seconds); refined from the run's progress lines as it runs.
    :param expected_changeover: with ``deadline``: what starting a session costs (launch, boot, restore, steps
        redone; timedelta or seconds) until the run has measured its own; default 12 minutes.
    :param deadline_alert: with ``deadline`` (a datetime or a timedelta): an Airflow callback
        (``AsyncCallback`` or ``SyncCallback``, the team's usual alert) that Airflow calls if the DAG run is not
        done by the deadline, registered on the task's DAG as a ``DeadlineAlert``. A timedelta deadline counts, for
        the alert, from when the DAG run was queued. None: no alert.
    :param deadline_policy: with ``deadline``: ``"default"`` (the project's policy) or one of the baselines
        ``grid-resume simulate`` compares it with (``"uniform-progress"``, ``"greedy"``, ``"on-demand"``).
    :param failure_retries: set by ``partial()`` for mapped tasks (the failure budget it split from ``retries``);
        do not pass it yourself.
    """

    template_fields: Sequence[str] = ("command", "workdir", "artifacts_uri", "deadline")
    operator_extra_links = (GridInstanceLink(), GridArtifactsLink())
    ui_color = "#ffd27f"

    def __init__(
        self,
        *,
        command: str | Sequence[str],
        artifacts_uri: str,
        instance_types: Sequence[str] = (),
        image_id: str | None = None,
        subnet_ids: Sequence[str] = (),
        instance_requirements: dict | None = None,
        placements: Sequence[dict] | None = None,
        workdir: str | None = None,
        security_group_ids: Sequence[str] = (),
        iam_instance_profile: str | None = None,
        root_volume_gb: int | None = None,
        key_name: str | None = None,
        instance_tags: dict[str, str] | None = None,
        metadata_hop_limit: int = 2,
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
        log_offset_save_interval: float = 120.0,
        instance_check_interval: float = 30.0,
        heartbeat_timeout: float = 120.0,
        boot_timeout: float = 900.0,
        not_found_grace: float = 120.0,
        capacity_backoff: tuple[float, float] = (15.0, 300.0),
        rerun: str = "resume",
        interruption_retry_delay: timedelta | float = timedelta(0),
        on_interruption_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_demand_prices: Mapping[str, float] | None = None,
        failure_retries: int | None = None,
        keep_checkpoints: int | None = 3,
        live_output: str = "sqs",
        s3_encryption: str | None = None,
        s3_kms_key_id: str | None = None,
        s3_checksum: str | None = None,
        model_asset: Asset | str | None = None,
        deadline: datetime | timedelta | str | None = None,
        expected_runtime: timedelta | float | None = None,
        expected_changeover: timedelta | float = timedelta(minutes=12),
        deadline_policy: str = "default",
        deadline_alert: AsyncCallback | SyncCallback | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_write = S3WriteOptions(s3_encryption, s3_kms_key_id, s3_checksum)  # validates the three
        uri = model_asset_uri(model_asset)  # an s3://bucket/key, or a ValueError saying what to fix
        self.model_asset = None if uri is None else model_asset if isinstance(model_asset, Asset) else Asset(uri)
        if self.model_asset is not None and self.model_asset not in self.outlets:
            self.outlets.append(self.model_asset)
        options = RunOptions(  # validates every parameter below, naming each one that is wrong
            command=command if isinstance(command, str) else tuple(command or ()),
            artifacts_uri=artifacts_uri,
            max_interruptions=max_interruptions,
            capacity_wait=seconds(capacity_wait),
            max_run=seconds(max_run),
            interruption_retry_delay=seconds(interruption_retry_delay) or 0.0,
            rerun=rerun,
            live_output=live_output,
            keep_checkpoints=keep_checkpoints,
            on_demand_prices=dict(on_demand_prices or {}),
            deadline=deadline,
            expected_runtime=seconds(expected_runtime),
            expected_changeover=seconds(expected_changeover) or 0.0,
            deadline_policy=deadline_policy,
        )
        self.command = command
        self.artifacts_uri = artifacts_uri
        self.workdir = workdir
        self.spec = launch_spec(  # validates image_id, types, requirements, subnets, placements, tags, root volume
            image_id=image_id,
            instance_types=tuple(instance_types or ()),
            subnet_ids=tuple(subnet_ids or ()),
            security_group_ids=tuple(security_group_ids),
            iam_instance_profile=iam_instance_profile,
            root_volume_gb=root_volume_gb,
            key_name=key_name,
            tags=dict(instance_tags or {}),
            metadata_hop_limit=metadata_hop_limit,
            instance_requirements=instance_requirements,
            placements=placements,
        )
        self.use_spot = use_spot
        self.auto_resume = auto_resume
        self.max_interruptions = options.max_interruptions
        self.capacity_wait = options.capacity_wait
        self.max_run = options.max_run
        self.fallback = dict(fallback or {}) if use_spot else {"after_capacity_failures": 0}
        self.agent_args = list(agent_args)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.log_offset_save_interval = log_offset_save_interval
        self.instance_check_interval = instance_check_interval
        self.capacity_backoff = (float(capacity_backoff[0]), float(capacity_backoff[1]))
        self.heartbeat_timeout = heartbeat_timeout
        self.not_found_grace = not_found_grace
        self.boot_timeout = boot_timeout
        self.rerun = options.rerun
        self.live_output = options.live_output
        self.on_demand_prices = dict(options.on_demand_prices)
        self.keep_checkpoints = options.keep_checkpoints
        self.deadline = deadline
        self.expected_runtime = options.expected_runtime
        self.expected_changeover = options.expected_changeover
        self.deadline_policy = options.deadline_policy
        if deadline_alert is not None:
            register_deadline_alert(self.dag if self.has_dag() else None, self.task_id, deadline, deadline_alert)
        self.interruption_retry_delay = timedelta(seconds=options.interruption_retry_delay)
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
    def partial(cls, **kwargs: Any) -> Any:
        """Mapped tasks: the scheduler takes a mapped task's ``retries`` from its partial arguments,
        before any ``__init__`` runs, so the interruption budget is added here as well."""
        op_partial = sdk_partial(cls, **kwargs)
        given = op_partial.kwargs
        alert = given.pop("deadline_alert", None)
        if alert is not None:  # one alert for the DAG run, registered once: not by each mapped instance
            register_deadline_alert(given.get("dag"), str(given.get("task_id")), given.get("deadline"), alert)
        if given.get("failure_retries") is None:
            failure = int(given.get("retries") or 0)
            resume = given.get("auto_resume", True)
            given["failure_retries"] = failure
            given["retries"] = failure + (int(given.get("max_interruptions", 20)) if resume else 0)
        return op_partial

    # -- the hooks (one of each per task instance, as the amazon provider's operators hold theirs) ----------
    @cached_property
    def spot_hook(self) -> SpotLaunchHook:
        return SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def _hook_in(self, region: str | None) -> SpotLaunchHook:
        """The EC2 hook of a session's region (placements), else the connection's."""
        if not region or region == self.region_name:
            return self.spot_hook
        return SpotLaunchHook(aws_conn_id=self.aws_conn_id, region_name=region)

    @cached_property
    def s3_hook(self) -> S3Hook:
        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    @cached_property
    def queue_hook(self) -> LiveQueueHook:
        return LiveQueueHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

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
            quiet_credential_logs()
            client = self.s3_hook.get_conn()
        return RunLedger(client, location, self.s3_write)

    def _run_ledger(self, context: Any, event: dict) -> tuple[str, RunLedger]:
        run_uri = event.get("run_uri") or self._base_uri(context)
        return run_uri, self._ledger(run_uri)

    def _argv(self) -> list[str]:
        return ["bash", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def _prepare(
        self, ledger: RunLedger, run_uri: str, live_queue: str | None, agent_sha256: str | None
    ) -> dict[str, str]:
        """Workdir snapshot once per run; the agent unless S3 still holds the one this task uploaded (its
        ``agent_sha256``, remembered in the state store); the spec whenever it changed, so a failed run cleared
        after fixing its command resumes with the fixed one. Returns the digests the user data carries."""
        spec = Spec(
            command=self._argv(),
            agent_args=self.agent_args,
            run_uri=run_uri,
            budgets=self._budgets(),
            live_queue=live_queue,
            s3_write=self.s3_write.to_json(),
        )
        first = ledger.get(ledger.key(layout.SPEC)) is None
        if first and self.workdir and not os.path.isdir(self.workdir):
            raise AirflowFailException(f"workdir {self.workdir!r} does not exist or is not a directory")
        try:  # the run's first write: a bucket's rules refuse it here, named
            agent = ensure_agent(ledger, agent_sha256, agent_zipapp)
        except BucketRulesError as exc:
            raise AirflowFailException(str(exc)) from exc
        if first and self.workdir and not ledger.list_manifests():
            result = Syncer(ledger, self.workdir, session=0).sync("snapshot")
            self.log.info("uploaded the workdir snapshot %s: %s", self.workdir, result.summary())
        spec_sha256, changed = ensure_spec(ledger, spec)
        if changed:
            self.log.info("the command changed since the last session: now %s", spec.command)
        return {"agent_sha256": agent, "spec_sha256": spec_sha256}

    def _budgets(self) -> dict[str, int]:
        """The limits the run view shows its budgets against."""
        return {"max_interruptions": self.max_interruptions, "failure_retries": self.failure_retries}

    def _budget_rules(self) -> Budgets:
        return Budgets(self.auto_resume, self.max_interruptions, self.failure_retries)

    def _judge_last_session(self, context: Any, ledger: RunLedger, session: int) -> bool:
        """Judge again the budgets after ``session``, which ended: the try that saw it end may have died
        between recording its verdict and acting on it. On a retry an exhausted budget fails the run as
        that try would have; on the first try after a clear it ends the run (True), so the clear gets
        fresh budgets (``rerun='resume'``) or a new run (``'fresh'``)."""
        outcome = ledger.read_record(Outcome, session)
        closed = None if outcome else ledger.read_closed(session)
        status = ended_status(outcome, closed)
        interruptions, failures = budget_history(ledger, session + 1)
        reason = (outcome.reason if outcome else None) or (closed.reason if closed else None)
        exhausted = self._budget_rules().exhausted(
            status,
            session,
            interruptions,
            failures,
            reason=reason,
            hint=outcome.hint if outcome else None,
            cause=outcome.cause if outcome else None,
        )
        if not exhausted:
            return False
        ti = context.get("ti")
        if not first_try_of_cycle(getattr(ti, "try_number", None), getattr(ti, "max_tries", None), self.retries or 0):
            raise self._fail(ledger, session, exhausted)
        end_run(ledger, session, SessionStatus.FAILED, exhausted.splitlines()[0])
        self.log.info(
            "the run ended after session %d (%s); this try starts it again with fresh budgets", session, exhausted
        )
        return True

    def _live_queue(self, run_uri: str) -> str | None:
        """The run's live-output queue, created or re-tagged with the run's expiry (None: output via S3)."""
        if self.live_output != "sqs":
            return None
        hours = (self.max_run or 2 * 86400) / 3600 + 24  # then `grid-resume reap` may delete it
        try:
            return self.queue_hook.ensure_queue(run_uri, expiry_tag(time.time(), hours))
        except QueueRefused as exc:
            self.log.warning("%s", exc)
        except (ClientError, BotoCoreError) as exc:  # live output is a convenience: never fail the task over it
            self.log.warning("could not create the live-output queue (%s): output goes through S3 this try", exc)
        return None

    def _delete_live_queue(self, ledger: RunLedger) -> None:
        """The run ended: its queue goes (a failure leaves it to `grid-resume reap`, by its expiry tag)."""
        spec = ledger.read_spec()
        if spec is None or not spec.live_queue:
            return
        try:
            self.queue_hook.delete_queue(spec.live_queue)
        except (ClientError, BotoCoreError) as exc:
            self.log.warning(
                "could not delete the live-output queue %s (grid-resume reap will): %s", spec.live_queue, exc
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
        end_run(ledger, session, SessionStatus.FAILED, message.splitlines()[0])
        self._delete_live_queue(ledger)
        # the last try's log ends with the run's story
        self._summary(ledger, {"status": SessionStatus.FAILED.value}, self._records(ledger))
        return AirflowFailException(message)

    # -- the lifecycle -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        base_uri = self._base_uri(context)
        generation, ledger, final = newest_generation(self._ledger(base_uri), base_uri)
        choice = choose_generation(
            final.status if final else None,
            final.session if final else None,
            final.reason if final else None,
            self.rerun,
        )
        if isinstance(choice, ReportSucceeded):
            self.log.info("%s", choice.note)
            return self._succeeded(context, ledger, {"status": SessionStatus.SUCCEEDED.value})
        if isinstance(choice, StartFresh):
            generation += 1
            ledger = self._ledger(generation_uri(base_uri, generation), ledger.client)
            self.log.info("%s as %s", choice.note, ledger.location)
        elif choice.note:
            self.log.info("%s", choice.note)
        run_uri = generation_uri(base_uri, generation)
        store = context.get("task_state_store")
        state = (store.get(STATE_KEY) if store else None) or {}
        if state.get("run_uri") != run_uri:
            state = {}
        digests = self._prepare(ledger, run_uri, self._live_queue(run_uri), state.get("agent_sha256"))
        loc = ledger.location
        GridArtifactsLink.persist(
            context=context, operator=self, **self._link_target(), bucket=loc.bucket, prefix=loc.prefix
        )
        # Where the UI plugin reads this run's ledger, and through which connection (never credentials).
        context["ti"].xcom_push(
            key=RUN_XCOM,
            value={
                "run_uri": run_uri,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "fleet_uri": fleet_uri(self.artifacts_uri),
            },
        )
        state = {**state, "run_uri": run_uri, "agent_sha256": digests["agent_sha256"]}
        if store:
            store.set(STATE_KEY, state)
        step = next_step(run_view(ledger, state))
        if isinstance(step, Reattach) and step.instance_id != state.get("instance_id"):
            # Named by launch.json only, which an instance could have written: adopt it only if EC2 does not say it
            # is another's; else the launcher finds the session's own instance by its tags and ClientToken.
            named = ledger.read_launch(step.session)
            hook = self._hook_in(named.region if named else None)
            refused = self._refused_instance(run_uri, step.session, step.instance_id, hook)
            if refused:
                self.log.warning("launch.json of session %d names %s; %s", step.session, step.instance_id, refused)
                step = LaunchStep(step.session)
        if isinstance(step, ReportSucceeded):
            self.log.info("%s", step.note)
            assert step.session is not None
            end_run(ledger, step.session, SessionStatus.SUCCEEDED, "succeeded")
            outcome = ledger.read_record(Outcome, step.session)
            return self._succeeded(
                context,
                ledger,
                {"status": SessionStatus.SUCCEEDED.value, "outcome": outcome.to_dict() if outcome else None},
            )
        if isinstance(step, Reattach):
            self.log.info("reattaching to session %d on instance %s", step.session, step.instance_id)
            state = {
                **state,
                "session": step.session,
                "run_uri": run_uri,
                "instance_id": step.instance_id,
                "launched_at": float(step.launched_at or time.time()),
                "first_started_at": float(state.get("first_started_at") or time.time()),
            }
            if store:
                store.set(STATE_KEY, state)
            return self._watch(context, run_uri, step.session, step.instance_id, state)
        session = step.session
        if step.close_unwatched:
            self._close_if_unwatched(ledger, run_uri, step.close_unwatched)
        if step.judge and self._judge_last_session(context, ledger, step.judge) and self.rerun == "fresh":
            return self.execute(context)  # the run has ended now: start over as a new run
        interruptions, _failures = budget_history(ledger, session)
        first_started = float(state.get("first_started_at") or time.time())
        left = first_started + self.max_run - time.time() if self.max_run else None
        if left is not None and left <= 0:
            raise self._fail(ledger, session - 1, f"max_run ({self.max_run:.0f} s) reached before session {session}")
        spec = dataclasses.replace(
            self._resolved_spec(), agent_sha256=digests["agent_sha256"], spec_sha256=digests["spec_sha256"]
        )
        expires_at = plan_session(ledger, session, spec.expiry_hours)
        state = {
            "session": session,
            "run_uri": run_uri,
            "first_started_at": first_started,
            "agent_sha256": digests["agent_sha256"],
        }
        if store:
            store.set(STATE_KEY, state)
        run_state = read_run_state(ledger, session)
        ctx = self._deadline_context(ledger, first_started, self._pace_uri(context))  # None without deadline=
        launched = self._launch_now(spec, run_uri, session, interruptions, expires_at, run_state, ctx)
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
                expires_at=expires_at,
                s3_write=self.s3_write.to_json(),
                fleet_uri=fleet_uri(self.artifacts_uri),
                run_state=run_state,
                deadline=ctx.as_dict() if ctx else None,
            ),
            method_name="on_capacity",
        )

    def _close_if_unwatched(self, ledger: RunLedger, run_uri: str, session: int) -> None:
        """A session that ended while no try watched it (the try that launched it died before deferring):
        record the Airflow side's verdict from the agent's outcome, and make sure its instance is gone."""
        outcome = ledger.read_record(Outcome, session)
        if outcome is None or ledger.read_closed(session) is not None:
            return
        launch = ledger.read_launch(session)
        hook = self._hook_in(launch.region if launch else None)
        named = launch.instance_id if launch else None
        refused = self._refused_instance(run_uri, session, named, hook) if named else None
        if refused:
            self.log.info("launch.json of session %d names %s; %s: not terminated", session, named, refused)
        instance_id = named if named and not refused else None
        instance_id = instance_id or (hook.find_session_instance(run_uri, session) or {}).get("InstanceId")
        self.log.info("session %d ended (%s) while no try watched it; its output:", session, outcome.status)
        watched = ledger.read_record(Watch, session)
        offset = watched.log_offset if watched else 0
        while True:  # the task log must have every line the session shipped
            data, offset_after = ledger.read_log(session, offset)
            if not data:
                break
            for record in log_records(log_lines(data.decode(errors="replace"))):
                self.log.info("%s", record)
            offset = offset_after
        ledger.write_record(Watch(log_offset=offset, at=time.time()), session)
        if instance_id and not hook.ensure_terminated(instance_id, timeout=120.0):
            self.log.error("could not confirm that %s is terminated; `grid-resume reap` finds it", instance_id)
        closed = Closed(
            status=outcome.status,
            reason=outcome.reason,
            instance_id=instance_id,
            at=time.time(),
            unwatched=True,
        )
        ledger.write_record(closed, session)

    def _refused_instance(
        self, run_uri: str, session: int, instance_id: str, hook: SpotLaunchHook | None = None
    ) -> str | None:
        """Why ``instance_id`` is not this session's instance (its ClientToken and tags, ec2/identity.py), None
        when it is, or when EC2 does not list it (long gone, or too new: the run trigger checks it again before it
        watches or terminates it). Never adopt or terminate an instance a ledger document named without this."""
        found = (hook or self.spot_hook).describe_instances([instance_id]).get(instance_id)
        problem = why_not(found, run_uri, session) if found is not None else None
        return f"refused: {problem}" if problem else None

    def _resolved_spec(self) -> LaunchSpec:
        """The launch spec with what only AWS knows filled in (no I/O at parse time), in every region."""
        if self.spec.placements:
            return resolve_placements(self.spec, self._resolved_in, self.aws_conn_id)
        return self._resolved_in(self.spec, self.spot_hook)

    def _resolved_in(self, spec: LaunchSpec, hook: SpotLaunchHook) -> LaunchSpec:
        """One region's spec: its SSM image parameter resolved, its AMI's root device when a size is asked."""
        parameter = ssm_parameter(spec.image_id)
        try:
            if parameter:  # resolved once per try: DescribeImages cannot take the parameter, RunInstances could
                image_id = hook.resolve_image(parameter)
                self.log.info("image_id %s is %s", spec.image_id, image_id)
                spec = dataclasses.replace(spec, image_id=image_id)
            if not spec.root_volume_gb or spec.root_device_name:
                return spec
            device = hook.root_device_name(spec.image_id)
        except ClientError as exc:
            err = launch_error(exc)
            raise AirflowFailException(explain_fatal(err.code, err.message)) from exc
        return dataclasses.replace(spec, root_device_name=device)

    def _pace_uri(self, context: Any) -> str:
        ti = context["ti"]
        return pace_uri(self.artifacts_uri, ti.dag_id, ti.task_id, getattr(ti, "map_index", -1))

    def _deadline_context(self, ledger: RunLedger, first_started: float, pace: str) -> DeadlineContext | None:
        """A deadline= run: the deadline (resolved at the first try), the pace measured so far (before it has
        measured its own, what earlier runs of the task did: the pace record at ``pace``), the price (None
        without deadline=, or with use_spot=False: every session is on-demand then anyway)."""
        if self.deadline is None or not self.expected_runtime or not self.use_spot:
            return None
        price = on_demand_price(self.spec.instance_types[0], self.on_demand_prices) or 1.0
        try:
            return deadline_context(
                ledger,
                given=self.deadline,
                expected_hours=self.expected_runtime / 3600.0,
                first_started_at=first_started,
                now=time.time(),
                on_demand_price=price,
                records=read_records(ledger),
                expected_changeover_hours=self.expected_changeover / 3600.0,
                policy=self.deadline_policy,
                prior=read_prior(ledger.client, pace),
            )
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc

    def _launch_now(
        self,
        spec: LaunchSpec,
        run_uri: str,
        session: int,
        interruptions: int,
        expires_at: str,
        run_state: dict,
        ctx: DeadlineContext | None = None,
    ) -> dict | None:
        """One round over the pairs from the worker, with the capacity trigger's own launcher: with
        capacity at hand, no capacity deferral is needed (and no trigger fires seconds after
        deferring). None means: wait in the trigger."""
        return asyncio.run(self._a_launch_now(spec, run_uri, session, interruptions, expires_at, run_state, ctx))

    async def _a_launch_now(
        self,
        spec: LaunchSpec,
        run_uri: str,
        session: int,
        interruptions: int,
        expires_at: str,
        run_state: dict,
        ctx: DeadlineContext | None = None,
    ) -> dict | None:
        hook, s3_hook = self.spot_hook, self.s3_hook
        started_at = time.time()
        bucket = AsyncTokenBucket()
        async with (
            hook_client(hook) as ec2,
            hook_client(s3_hook) as s3,
            region_links(spec, self.aws_conn_id, self.region_name, (hook, ec2, bucket), shared=False) as links,
        ):
            launcher = SessionLauncher(
                hook,
                ec2,
                AsyncLedgerReader(s3, run_uri, session, write_options=self.s3_write),
                spec=spec,
                run_uri=run_uri,
                session=session,
                region=self.region_name,
                expires_at=expires_at,
                bucket=bucket,
                log=self.log,
                links=links,
            )
            try:
                record = await fleetstore.a_read(s3, fleet_uri(self.artifacts_uri))
                chooser = (
                    LaunchChooser(ctx, point="launch", tick_seconds=self.capacity_backoff[0], record=record)
                    if ctx
                    else None
                )
                start = await launcher.start(
                    fallback=self.fallback,
                    interruptions=interruptions,
                    record=record,
                    run_state=run_state,
                    chooser=chooser,
                )
            except PairsUnknown as exc:
                raise AirflowFailException(exc.message) from exc
            if start.existing is not None:
                return launcher.reattached(start.existing, started_at=started_at)
            assert start.planner is not None
            result = await launcher.round(start.planner, 0.0)
            if result.error is not None:
                raise AirflowFailException(result.error["message"])
            for miss in result.misses:
                self.log.info("no capacity at once: %s", miss)
            if result.instance is None:
                fleet, answers = fleet_uri(self.artifacts_uri), {"answers": launcher.observed}
                record_launch(self.s3_hook.get_conn(), fleet, answers, run_uri, session, self.s3_write)
                return None
            return await launcher.launched(result, started_at=started_at, rounds=1)

    def on_capacity(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        run_uri, ledger = self._run_ledger(context, event)
        record_launch(ledger.client, fleet_uri(self.artifacts_uri), event, run_uri, session, self.s3_write)
        if event.get("status") != "launched":
            raise AirflowFailException(f"session {session}: {event.get('message') or event}")
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
        launch = Launch(
            instance_id=str(event["instance_id"]),
            instance_type=event.get("instance_type"),
            zone=event.get("zone"),
            subnet_id=event.get("subnet_id"),
            lifecycle=event.get("lifecycle"),
            spot_price=float(event["spot_price"]) if event.get("spot_price") else None,
            on_demand_price=on_demand_price(event.get("instance_type"), self.on_demand_prices),
            launched_at=float(event.get("launched_at") or time.time()),
            waited_seconds=float(event["waited_seconds"]) if event.get("waited_seconds") is not None else None,
            region=event.get("region"),
            resolved_types=event.get("resolved_types"),
            bucket_region=self._bucket_region() if self.spec.placements else None,
        )
        try:
            ledger.write_record(launch, session)
        except ConditionalWriteLost:  # a retried try that launched it already: the first record stands
            self.log.info("session %d: launch.json was written before; kept", session)
        return self._watch(context, run_uri, session, event["instance_id"], state)

    def _watch(self, context: Any, run_uri: str, session: int, instance_id: str, state: dict) -> None:
        self._instance_id = instance_id
        region = (state.get("launch") or {}).get("region")
        if region is None and self.spec.placements:  # reattached: where the session's launch record says
            launch = self._ledger(run_uri).read_launch(session)
            region = launch.region if launch else None
        self._instance_region = region
        GridInstanceLink.persist(
            context=context,
            operator=self,
            **self._link_target(),
            instance_id=instance_id,
        )
        deadline = float(state.get("first_started_at", time.time())) + self.max_run if self.max_run else None
        ledger = self._ledger(run_uri)
        spec = ledger.read_spec()
        self.defer(
            trigger=RunWatchTrigger(
                run_uri=run_uri,
                session=session,
                instance_id=instance_id,
                launched_at=float(state.get("launched_at", time.time())),
                deadline=deadline,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                instance_region=region if region != self.region_name else None,
                poll_interval=self.poll_interval,
                offset_save_interval=self.log_offset_save_interval,
                instance_check_interval=self.instance_check_interval,
                heartbeat_timeout=self.heartbeat_timeout,
                not_found_grace=self.not_found_grace,
                boot_timeout=self.boot_timeout,
                deferred_at=time.time(),
                live_queue=spec.live_queue if spec is not None else None,
                s3_write=self.s3_write.to_json(),
                deadline_policy=self._watch_policy(context, ledger, session, state),
            ),
            method_name="on_session_end",
        )

    def _watch_policy(self, context: Any, ledger: RunLedger, session: int, state: dict) -> dict | None:
        """A deadline= run's session on on-demand: what the run watch asks the policy with (back to spot?)."""
        launch = ledger.read_launch(session) if self.deadline is not None else None
        if launch is None or launch.lifecycle != "on-demand":
            return None
        ctx = self._deadline_context(
            ledger, float(state.get("first_started_at") or time.time()), self._pace_uri(context)
        )
        if ctx is None:
            return None
        zones = self.spot_hook.subnet_zones(list(self.spec.subnet_ids))
        pools = pool_zones(self.spec.instance_types, zones.values())
        return {
            "context": ctx.as_dict(),
            "pools": pools,
            "instance_types": list(self.spec.instance_types),
            "interval": watch_interval(ctx),
            "fleet": fleet_uri(self.artifacts_uri),
        }

    def on_session_end(self, context: Any, event: dict | None = None) -> Any:
        event = event or {}
        session = int(event.get("session") or 0)
        status = event.get("status")
        _, ledger = self._run_ledger(context, event)
        closed = Closed(status=status, reason=event.get("reason"), instance_id=event.get("instance_id"), at=time.time())
        ledger.write_record(closed, session)
        record_session_end(fleet_uri(self.artifacts_uri), ledger, session, status, lasted_hours=LASTED_HOURS)
        # The budgets are read only when this ending can spend one (a success or max_run reads nothing more).
        interruptions, failures = budget_history(ledger, session + 1) if spends_budget(status) else (0, 0)
        outcome = event.get("outcome")
        verdict = session_verdict(
            status,
            session,
            outcome,
            closed_reason=event.get("reason"),
            interruptions=interruptions,
            failures=failures,
            budgets=self._budget_rules(),
            max_run=self.max_run,
        )
        if verdict.action == REPORT:
            end_run(ledger, session, SessionStatus.SUCCEEDED, "succeeded")
            self._delete_live_queue(ledger)
            self._retain(ledger)
            return self._succeeded(context, ledger, event)
        if verdict.action == FAIL_RUN:
            raise self._fail(ledger, session, verdict.message)
        if verdict.action == NEXT_SESSION:  # a planned stop spends no try: this one launches the next session
            self.log.info("%s", verdict.message)
            return self.execute(context)
        if verdict.action == RETRY_INTERRUPTED:
            self._alert_as_interruption()
            manifest = (outcome or {}).get("manifest") or next(iter(ledger.list_manifests()), None)
            name = getattr(manifest, "name", manifest)
            resume = f"checkpoint {name} in {ledger.location}" if name else "the start (no checkpoint yet)"
            raise SessionInterrupted(
                f"spot interruption: session {session} ended: {verdict.message}; the next try resumes from {resume} "
                f"({interruptions} of {self.max_interruptions} interruptions used)"
            )
        raise ScriptFailed(verdict.message)

    def _bucket_region(self) -> str | None:
        """The region of the run's bucket (the ledger's clients and the user data's): the operator's, else the
        connection's; what a session in another region pays data transfer to and from."""
        return self.region_name or self.spot_hook.conn_region_name

    def _link_target(self) -> dict:
        """Region, partition and (for an endpoint the AWS console cannot show) its console, for the extra links."""
        if getattr(self, "_target", None) is None:
            self._target = link_target(self.spot_hook)
        return self._target

    def _alert_as_interruption(self) -> None:
        """An interruption is routine on spot: this try's retry runs ``on_interruption_callback``
        instead of ``on_retry_callback`` and sends no retry email. Airflow reads both from the task
        object when the try ends, after this method returns."""
        self.on_retry_callback = list(self.on_interruption_callback)
        self.email_on_retry = False

    def _records(self, ledger: RunLedger) -> list[dict[str, Any]]:
        """The run's session records (with the policy's decisions for a deadline= run), read once per ending."""
        return read_records(ledger, decisions=self.deadline is not None)

    def _summary(self, ledger: RunLedger, event: dict, records: list[dict[str, Any]]) -> dict:
        deadline = as_dict(ledger.read_record(Deadline)) if self.deadline is not None else None
        summary = summarize(records, final_outcome=event.get("status"), deadline=deadline)
        last = (event.get("outcome") or {}).get("manifest")
        if last is None:  # reported without this session's outcome: the newest committed checkpoint
            newest_first = ledger.list_manifests()
            last = newest_first[0].name if newest_first else None
        summary = {"run_uri": str(ledger.location), **summary, "last_manifest": last}
        for line in summary_lines(summary, run_uri=str(ledger.location)):
            self.log.info("%s", line)
        return summary

    def _succeeded(self, context: Any, ledger: RunLedger, event: dict) -> dict:
        """The run succeeded: its summary (the XCom), the model's asset event, the lineage's facts."""
        records = self._records(ledger)
        summary = self._summary(ledger, event, records)
        self._completed_summary = summary
        self._record_pace(context, ledger, records)
        if self.model_asset is not None:
            checkpoint = read_final_checkpoint(ledger, summary.get("last_manifest"))
            extra = model_event_extra(summary, checkpoint, bucket=ledger.location.bucket)
            context["outlet_events"][self.model_asset].extra.update(extra)
            self.log.info("model asset %s: %s", self.model_asset.uri, extra["checkpoint"] or "no checkpoint")
        return summary

    def _record_pace(self, context: Any, ledger: RunLedger, records: list[dict[str, Any]]) -> None:
        """What this run measured of its pace (from the records its summary read), for the task's next runs (a
        deadline= run's prior); ``record_run`` logs, never raises, a failure to write it."""
        pace = measure(records, expected_hours=(self.expected_runtime or 0.0) / 3600.0, now=time.time())
        record_run(ledger.client, self._pace_uri(context), str(ledger.location), pace, time.time(), self.s3_write)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The workdir's upload in, the run's ledger (and the model asset) out, the run's story as a facet."""
        return operator_lineage(
            getattr(self, "_completed_summary", None),
            has_workdir=bool(self.workdir),
            model_asset_uri=self.model_asset.uri if self.model_asset is not None else None,
        )

    def on_kill(self) -> None:
        """Killed while on a worker (between launch and defer): never leave the instance running.
        While deferred, the run trigger's ``on_kill`` does the same."""
        instance_id = getattr(self, "_instance_id", None)
        if instance_id:
            self.log.warning("task killed: terminating instance %s", instance_id)
            hook = self._hook_in(getattr(self, "_instance_region", None))
            if not hook.ensure_terminated(instance_id, timeout=60.0):
                self.log.error("could not confirm that %s is terminated; `grid-resume reap` finds it", instance_id)


__all__ = ["GridRunOperator", "ScriptFailed", "SessionInterrupted", "generation_uri", "run_key"]
