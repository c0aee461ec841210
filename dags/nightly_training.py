"""Nightly training on EC2 spot: several models in parallel, each resumed after interruptions, then a cost report.

A template for real AWS. Everything AWS-specific is a setting at the top of this file; nothing here talks to AWS
(or to anything else) while the file is parsed.

Where the settings come from, and why:

- **Deployment settings** (AMI, subnets, security groups, instance profile, bucket, region, connection, code
  directory): environment variables ``GRID_NIGHTLY_*`` read when the file is parsed, with placeholder defaults.
  ``GridRunOperator`` checks ``image_id``, ``instance_types`` and ``subnet_ids`` when the task is built and they are
  not template fields, so they must be known at parse time; reading Airflow Variables there would cost a metadata
  database (or API) round trip on every parse, so the environment is used instead.
- **Per-model settings** (command, instance types in order of preference, budgets): ``MODELS`` below, reviewed in
  git with the training code.
- **Per-run parameters** (Airflow ``params``, editable in "Trigger DAG w/ config"): ``as_of`` (the data date,
  default the run's logical date) and ``extra_args`` (appended to every training command, e.g. ``--max-steps 50``
  for a smoke run). They only reach template fields (``command``), so a change applies to the runs it is given to.

One task per model (a loop), since each model has its own instance types and budgets. Dynamic task mapping
(``GridRunOperator.partial(...).expand(...)``) works as well, one run per map index.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, AssetAny, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_grid_resume.operators import GridRunOperator
from airflow_grid_resume.run.asset import model_from_event

DAG_ID = "nightly_training"
EVALUATE_DAG_ID = "evaluate"


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"GRID_NIGHTLY_{name}", default)


def _setting_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _setting(name, default).split(",") if item.strip()]


# -- deployment settings (replace the placeholders through the environment of every Airflow component) -----------
ARTIFACTS_URI = _setting("ARTIFACTS_URI", "s3://my-ml-artifacts/grid-runs/")  # run ledgers live under it
# Each model is an Airflow Asset under this URI; every successful night's run emits an event on it (the evaluate DAG
# below is scheduled on them).
MODELS_URI = _setting("MODELS_URI", "s3://my-ml-artifacts/models/")
IMAGE_ID = _setting("AMI", "ami-0123456789abcdef0")  # python3 + boto3 + the training stack, see docs/user-guide.md
SUBNET_IDS = _setting_list("SUBNETS", "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb")  # one per zone to try
SECURITY_GROUP_IDS = _setting_list("SECURITY_GROUPS", "")  # empty: the VPC's default group
INSTANCE_PROFILE = _setting("INSTANCE_PROFILE", "grid-training")  # S3 access to the run prefix, nothing else
REGION = _setting("REGION", "us-east-1")
AWS_CONN_ID = _setting("AWS_CONN_ID", "aws_default")
# The training code on the Airflow workers; uploaded once per run as the execution directory's first snapshot.
CODE_DIR = _setting("CODE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "training"))

# -- what to train every night ----------------------------------------------------------------------------------
# ``command`` runs with ``bash -c`` in the execution directory on the instance; it must be resumable
# (docs/user-guide.md). Instance types are tried in this order, in every subnet, cheapest acceptable first.
BUDGETS = {
    "retries": 1,  # failures of the script itself (a crash, an OOM): one more try
    "max_interruptions": 10,  # spot interruptions and lost instances: resumed this many times
    "capacity_wait": timedelta(hours=4),  # per session, deferred (no worker slot)
    "max_run": timedelta(hours=12),  # the whole run, from its first try: sessions and waits included
}
MODELS = [
    {
        "name": "image_classifier",
        "command": "python3 train.py --model resnet50 --epochs 30",
        "instance_types": ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        "root_volume_gb": 200,  # resizes the root only if the AMI's root device is /dev/xvda (Amazon Linux)
    },
    {
        "name": "text_encoder",
        "command": "python3 train.py --model bert-base --epochs 3",
        "instance_types": ["g5.2xlarge", "g5.xlarge"],
        "root_volume_gb": 100,
        "max_interruptions": 20,
        "max_run": timedelta(hours=16),
    },
    {
        "name": "ranker",
        "command": "python3 train.py --model lightgbm-ranker",
        "instance_types": ["c5.2xlarge", "m5.xlarge"],
        "capacity_wait": timedelta(hours=2),
        "max_run": timedelta(hours=4),
    },
]
# After 3 h without spot capacity, or 6 interruptions, a session runs on-demand so the models are ready by morning.
FALLBACK = {"after_wait_seconds": 3 * 3600, "after_interruptions": 6}


def training_task_id(model: dict) -> str:
    return f"train_{model['name']}"


def model_asset(model: dict) -> Asset:
    """The model's Asset: the same URI every night, so a DAG can be scheduled on "a new model exists"."""
    return Asset(f"{MODELS_URI.rstrip('/')}/{model['name']}")


MODEL_ASSETS = {model["name"]: model_asset(model) for model in MODELS}


def _usd(value: float | None) -> str:
    return "?" if value is None else f"{float(value):.2f}"


def build_cost_report(summaries: dict[str, dict | None]) -> dict:
    """The cost report of one night from each model's run summary (``None``: the task left no summary).

    Summaries are ``GridRunOperator``'s return values: ``final_outcome``, ``sessions``, ``interruptions``,
    ``failures``, ``spot_seconds``, ``on_demand_seconds``, ``estimated_cost_usd`` and ``on_demand_cost_usd``
    (``None`` when a price was unknown). Missing keys read as zero or unknown.
    """
    header = [f"{'model':<20}", f"{'outcome':<10}", *(f"{h:>4}" for h in ("sess", "intr", "fail"))]
    lines = [" ".join([*header, f"{'hours':>6}", f"{'cost $':>8}", f"{'od $':>8}"])]
    failed, total, total_on_demand, unknown = [], 0.0, 0.0, []
    for name, summary in summaries.items():
        summary = summary or {}
        outcome = str(summary.get("final_outcome") or "no result")
        if outcome != "succeeded":
            failed.append(name)
        hours = (float(summary.get("spot_seconds") or 0) + float(summary.get("on_demand_seconds") or 0)) / 3600
        cost, on_demand = summary.get("estimated_cost_usd"), summary.get("on_demand_cost_usd")
        if cost is None or on_demand is None:
            unknown.append(name)
        else:
            total += float(cost)
            total_on_demand += float(on_demand)
        counts = " ".join(f"{int(summary.get(k) or 0):>4}" for k in ("sessions", "interruptions", "failures"))
        lines.append(f"{name:<20} {outcome:<10} {counts} {hours:>6.2f} {_usd(cost):>8} {_usd(on_demand):>8}")
    saving = f", {100 * (1 - total / total_on_demand):.0f}% saved" if total_on_demand > 0 else ""
    lines.append(f"total: {total:.2f} USD (spot and fallbacks) vs {total_on_demand:.2f} USD all on-demand{saving}")
    if unknown:
        lines.append(f"cost unknown (not in the totals): {', '.join(unknown)}")
    return {
        "lines": lines,
        "failed": failed,
        "estimated_cost_usd": round(total, 4),
        "on_demand_cost_usd": round(total_on_demand, 4),
        "cost_unknown": unknown,
    }


with DAG(
    dag_id=DAG_ID,
    description="Train every model nightly on EC2 spot, resuming after interruptions; report the cost",
    schedule="0 1 * * *",  # every night at 01:00 UTC
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # a night's training that runs late must not overlap the next one
    default_args={"owner": "ml-platform", "retry_delay": timedelta(minutes=5)},
    params={
        "as_of": Param("", type="string", description="data date (YYYY-MM-DD); empty: the run's logical date"),
        "extra_args": Param("", type="string", description="appended to every training command"),
    },
    tags=["ml", "spot", "grid-resume"],
    doc_md=__doc__,
) as dag:
    training = []
    for model in MODELS:
        budgets = {**BUDGETS, **{k: model[k] for k in BUDGETS if k in model}}
        training.append(
            GridRunOperator(
                task_id=training_task_id(model),
                command=model["command"] + " --as-of {{ params.as_of or ds }} {{ params.extra_args }}",
                workdir=CODE_DIR,
                artifacts_uri=ARTIFACTS_URI,
                instance_types=model["instance_types"],
                image_id=IMAGE_ID,
                subnet_ids=SUBNET_IDS,
                security_group_ids=SECURITY_GROUP_IDS,
                iam_instance_profile=INSTANCE_PROFILE,
                root_volume_gb=model.get("root_volume_gb"),
                instance_tags={"team": "ml", "model": model["name"], "schedule": DAG_ID},
                fallback=FALLBACK,
                aws_conn_id=AWS_CONN_ID,
                region_name=REGION,
                model_asset=MODEL_ASSETS[model["name"]],
                **budgets,
            )
        )

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def cost_report(**context) -> dict:
        """Log what each model's run cost (the operator's XCom summary); fail the DAG run if a model failed."""
        ti = context["ti"]
        summaries = {model["name"]: ti.xcom_pull(task_ids=training_task_id(model)) for model in MODELS}
        report = build_cost_report(summaries)
        print("\n".join(report["lines"]))
        if report["failed"]:
            # The training tasks are not leaves: without this the DAG run would be marked a success.
            raise AirflowFailException(f"training did not succeed for: {', '.join(report['failed'])}")
        return {k: v for k, v in report.items() if k != "lines"}

    training >> cost_report()


def evaluation_plan(events: dict[str, list[dict]]) -> list[dict]:
    """What the evaluate DAG does with the asset events that triggered it (``{model name: [event extra, ...]}``):
    one entry per model, its newest event, with where its checkpoint is and what training it took."""
    plan = []
    for name, extras in sorted(events.items()):
        if not extras:
            continue
        model = model_from_event(extras[-1])
        plan.append(
            {
                "model": name,
                "run_uri": model.run_uri,
                "checkpoint": model.manifest_uri,
                "bytes": model.bytes,
                "sessions": model.sessions,
                "interruptions": model.interruptions,
                "cost_usd": model.estimated_cost_usd,
            }
        )
    return plan


with DAG(
    dag_id=EVALUATE_DAG_ID,
    description="Evaluate each model the nightly training produced, as soon as it is there",
    # Runs whenever any model has a new version (an asset event of a run that succeeded), not at a fixed time.
    schedule=AssetAny(*MODEL_ASSETS.values()),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"owner": "ml-platform"},
    tags=["ml", "grid-resume"],
) as evaluate_dag:

    @task
    def evaluate(*, triggering_asset_events=None) -> list[dict]:
        """Each new model's checkpoint, from its asset event; replace the print with your evaluation (e.g.
        ``restore_model(model, directory, client=S3Hook(AWS_CONN_ID).get_conn())`` and score it)."""
        by_uri = {asset.uri: name for name, asset in MODEL_ASSETS.items()}
        events: dict[str, list[dict]] = {}
        for asset, asset_events in (triggering_asset_events or {}).items():
            name = by_uri.get(getattr(asset, "uri", asset))
            if name is not None:
                events[name] = [dict(e.extra) for e in asset_events]
        plan = evaluation_plan(events)
        for entry in plan:
            print(
                f"{entry['model']}: {entry['checkpoint']} ({entry['bytes']} bytes) after {entry['sessions']} sessions,"
                f" {entry['interruptions']} interruptions, {entry['cost_usd']} USD"
            )
        return plan

    evaluate()
