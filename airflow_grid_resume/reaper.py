"""``grid-resume reap``: find and terminate instances that outlived their run, and delete their runs'
live-output queues once those expired.

The last line of defence behind the run trigger's own terminations (which a triggerer outage, a
deleted trigger or an account-wide EC2 outage can defeat): every instance this project launches
carries ``grid-resume:run-id``, ``grid-resume:session`` and ``grid-resume:expires-at`` tags. An
instance is reaped when its expiry has passed, or when its run's ledger says the run ended in or
after its session and the Airflow side closed that session (``closed.json``, which the instance role
may not write: a ``final.json`` forged from an instance is not enough). A run's ledger is read only when
the instance's tags name the whole run URI (``grid-resume:run-sha256`` is the digest of ``run-id``): a
URI cut at 256 characters could be another run's. Instances without the project's tags are never
touched: the describe itself is filtered by the tag, and the selection checks it again. A live-output
queue (ledger/live.py) is deleted once its ``grid-resume:expires-at`` tag has passed; only queues named
with the project's prefix and carrying that tag are considered.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_grid_resume.ec2.tags import (
    EXPIRES_TAG,
    RUN_DIGEST_TAG,
    RUN_TAG,
    SESSION_TAG,
    run_digest,
    run_tag_is_whole,
)

LIVE_STATES = ["pending", "running", "stopping", "stopped"]


@dataclass(frozen=True)
class Reapable:
    instance_id: str
    run_uri: str
    session: int | None
    reason: str


def tags_of(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def parse_expiry(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def names_whole_run(tags: dict[str, str]) -> bool:
    """Whether the readable run tag is the whole run URI, so the run's ledger can be read from it: its digest is
    the digest tag, or (an instance launched before that tag) it is shorter than the 256 characters EC2 cuts at."""
    value = tags.get(RUN_TAG, "")
    if RUN_DIGEST_TAG in tags:
        return run_digest(value) == tags[RUN_DIGEST_TAG]
    return run_tag_is_whole(value)


def select_reapable(
    instances: Iterable[dict], now: datetime, run_ended_at_session: Callable[[str, int], int | None]
) -> tuple[list[Reapable], list[str]]:
    """(instances to terminate, notes on tagged instances kept). ``run_ended_at_session(run_uri, session)`` is
    the session a run ended in when its ledger also shows ``session`` closed, None while it has not ended (or
    cannot be read, or its records do not agree)."""
    reap, notes = [], []
    for instance in instances:
        tags = tags_of(instance)
        run_uri = tags.get(RUN_TAG)
        state = instance.get("State", {}).get("Name")
        if not run_uri or state not in LIVE_STATES:
            continue
        instance_id = str(instance["InstanceId"])
        try:
            session: int | None = int(tags.get(SESSION_TAG, ""))
        except ValueError:
            session = None
        expiry = parse_expiry(tags.get(EXPIRES_TAG, ""))
        if expiry is not None and expiry <= now:
            reap.append(Reapable(instance_id, run_uri, session, f"expired at {tags[EXPIRES_TAG]}"))
            continue
        # A cut run tag could name another run's ledger: then only the expiry decides.
        ended = run_ended_at_session(run_uri, session) if names_whole_run(tags) and session is not None else None
        if ended is not None and session is not None and session <= ended:
            reap.append(Reapable(instance_id, run_uri, session, f"its run ended in session {ended}"))
            continue
        if expiry is None:
            notes.append(f"{instance_id}: no readable {EXPIRES_TAG} tag ({tags.get(EXPIRES_TAG)!r}); kept")
    return reap, notes


def select_expired_queues(queues: Iterable[tuple[str, dict[str, str]]], now: datetime) -> list[dict]:
    """The live-output queues whose expiry passed, of (URL, tags) pairs; untagged ones are kept."""
    out = []
    for url, tags in queues:
        expiry = parse_expiry(tags.get(EXPIRES_TAG, ""))
        if expiry is not None and expiry <= now:
            out.append(
                {"queue_url": url, "run_uri": tags.get(RUN_TAG, ""), "reason": f"expired at {tags[EXPIRES_TAG]}"}
            )
    return out


def run_ended_reader(s3_client: Any) -> Callable[[str, int], int | None]:
    """``(run_uri, session) -> session the run ended in`` from the run's ``final.json`` (the run id is its URI),
    when the Airflow side also closed ``session`` (``sessions/N/closed.json``); else None."""
    from airflow_grid_resume.ledger.errors import UsageError
    from airflow_grid_resume.ledger.store import RunLedger
    from airflow_grid_resume.ledger.uri import parse_s3_uri

    cache: dict[tuple[str, int], int | None] = {}

    def ended(run_uri: str, session: int) -> int | None:
        if (run_uri, session) not in cache:
            try:
                ledger = RunLedger(s3_client, parse_s3_uri(run_uri))
                final = ledger.read_final()
                closed = ledger.read_closed(session) if final is not None else None
                cache[(run_uri, session)] = final.session if final is not None and closed is not None else None
            except (UsageError, Exception):
                cache[(run_uri, session)] = None  # unreadable: only the expiry decides
        return cache[(run_uri, session)]

    return ended


def tagged_instances(ec2_client: Any) -> list[dict]:
    """Every live instance with the project's run tag (a filtered describe: nothing else is listed)."""
    from airflow_grid_resume.hooks.base import call_with_retries

    filters = [{"Name": "tag-key", "Values": [RUN_TAG]}, {"Name": "instance-state-name", "Values": LIVE_STATES}]
    pages = call_with_retries(lambda: list(ec2_client.get_paginator("describe_instances").paginate(Filters=filters)))
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def reap(
    ec2_client: Any, s3_client: Any | None, *, apply: bool, now: datetime | None = None, sqs_client: Any | None = None
) -> dict:
    """Find (and with ``apply``, terminate or delete) the instances that outlived their run and the
    expired live-output queues; a JSON-able report."""
    from airflow_grid_resume.hooks.base import call_with_retries

    now = now or datetime.now(timezone.utc)
    if sqs_client is not None:
        from airflow_grid_resume.hooks.livequeue import delete_queue, project_queues
    queues = select_expired_queues(project_queues(sqs_client), now) if sqs_client is not None else []
    deleted = []
    if apply:
        for queue in queues:
            if delete_queue(sqs_client, queue["queue_url"]):
                deleted.append(queue["queue_url"])
    ended = run_ended_reader(s3_client) if s3_client is not None else (lambda _run, _session: None)
    selected, notes = select_reapable(tagged_instances(ec2_client), now, ended)
    terminated = []
    if apply:
        for item in selected:
            call_with_retries(functools.partial(ec2_client.terminate_instances, InstanceIds=[item.instance_id]))
            terminated.append(item.instance_id)
    return {
        "reapable": [item.__dict__ for item in selected],
        "terminated": terminated,
        "queues": queues,
        "deleted_queues": deleted,
        "notes": notes,
        "applied": apply,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="grid-resume reap",
        description="List (and with --apply, terminate) instances tagged by grid-resume whose expiry passed or whose "
        "run ended. Instances without the grid-resume:run-id tag are never touched.",
    )
    parser.add_argument("--region", help="AWS region (default: the environment's): the bucket's, and its instances")
    parser.add_argument(
        "--instance-region",
        action="append",
        default=[],
        metavar="REGION",
        help="also reap instances in REGION (runs with placements in several regions), their runs read from the "
        "bucket through --region; repeatable",
    )
    parser.add_argument("--apply", action="store_true", help="terminate them (default: only report)")
    parser.add_argument("--no-read-runs", action="store_true", help="decide by the expiry tag alone")
    parser.add_argument("--no-queues", action="store_true", help="leave live-output queues alone")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    import boto3

    ec2 = boto3.client("ec2", region_name=args.region)
    s3 = None if args.no_read_runs else boto3.client("s3", region_name=args.region)
    sqs = None if args.no_queues else boto3.client("sqs", region_name=args.region)
    report = reap(ec2, s3, apply=args.apply, sqs_client=sqs)
    for region in args.instance_region:
        if region == args.region:
            continue
        elsewhere = reap(boto3.client("ec2", region_name=region), s3, apply=args.apply, sqs_client=None)
        for key in ("reapable", "terminated", "notes"):
            report[key] = [*report[key], *elsewhere[key]]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for item in report["reapable"]:
        verb = "terminated" if item["instance_id"] in report["terminated"] else "would terminate"
        print(f"{verb} {item['instance_id']} (run {item['run_uri']}, session {item['session']}): {item['reason']}")
    for queue in report["queues"]:
        verb = "deleted" if queue["queue_url"] in report["deleted_queues"] else "would delete"
        print(f"{verb} queue {queue['queue_url']} (run {queue['run_uri']}): {queue['reason']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if not report["reapable"] and not report["queues"]:
        print("nothing to reap")
    elif not args.apply:
        print("(dry run: add --apply to terminate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
