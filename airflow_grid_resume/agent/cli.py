"""Command line of the agent: ``grid-resume agent --run-uri ... --workdir ... -- COMMAND``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from airflow_grid_resume.agent.logship import DEFAULT_DURABLE_INTERVAL, DEFAULT_LIVE_INTERVAL, DEFAULT_LOG_INTERVAL
from airflow_grid_resume.agent.supervisor import AgentOptions, configure_logging, run_agent
from airflow_grid_resume.agent.sync import MANIFESTS_PER_SESSION
from airflow_grid_resume.ledger.errors import EXIT_USAGE
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _at_least_zero(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def _write_options(value: str) -> S3WriteOptions:
    try:
        return S3WriteOptions.from_json(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-uri", required=True, help="s3://BUCKET/PREFIX of the run's ledger")
    parser.add_argument("--workdir", required=True, help="the execution directory, restored and synced")
    parser.add_argument("--session", type=int, help="session number to claim (default: the next free one)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="sync only matching paths")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="never sync matching paths")
    parser.add_argument("--sync-interval", type=_positive, default=300.0, help="seconds between periodic syncs")
    parser.add_argument("--heartbeat-interval", type=_positive, default=30.0, help="seconds between heartbeats")
    parser.add_argument(
        "--lease-ttl", type=_positive, default=300.0, help="seconds a silent agent keeps the run (renewed at 0.4 TTL)"
    )
    parser.add_argument(
        "--unwatched-timeout",
        type=float,
        default=1800.0,
        help="stop the session (as if interrupted) when no Airflow trigger has watched it this long; 0: never",
    )
    parser.add_argument(
        "--log-interval",
        type=_positive,
        default=DEFAULT_LOG_INTERVAL,
        help="seconds between S3 uploads of the output while it flows, without a working --live-queue (each is a PUT; "
        "the task log lags by about this)",
    )
    parser.add_argument(
        "--live-queue",
        metavar="URL",
        help="an SQS queue URL: output goes there every --live-interval and to S3 every --durable-log-interval "
        "(needs sqs:SendMessage on it; while the queue refuses, S3 gets it every --log-interval)",
    )
    parser.add_argument(
        "--live-interval",
        type=_positive,
        default=DEFAULT_LIVE_INTERVAL,
        help="seconds between live-output messages while output flows (one SQS request each)",
    )
    parser.add_argument(
        "--durable-log-interval",
        type=_positive,
        default=DEFAULT_DURABLE_INTERVAL,
        help="seconds between S3 uploads of the output while the live-output queue works (at least --log-interval)",
    )
    parser.add_argument("--imds-endpoint", help="metadata service (default: $AWS_EC2_METADATA_SERVICE_ENDPOINT)")
    parser.add_argument("--imds-poll", type=_positive, default=1.0, help="seconds between notice polls")
    parser.add_argument("--imds-timeout", type=_positive, default=1.0, help="timeout of one metadata request")
    parser.add_argument("--no-imds", action="store_true", help="do not watch the metadata service")
    parser.add_argument("--require-imds", action="store_true", help="fail if the metadata service is off")
    parser.add_argument(
        "--signal-grace", type=_positive, default=30.0, help="seconds the command gets after the agent's own SIGTERM"
    )
    parser.add_argument(
        "--sync-reserve", type=_positive, default=10.0, help="minimum seconds kept for the final sync before reclaim"
    )
    parser.add_argument("--min-grace", type=_positive, default=5.0, help="minimum seconds the command gets to exit")
    parser.add_argument(
        "--notice-window",
        type=_positive,
        default=120.0,
        help="seconds between a spot notice and the reclaim, assumed when the instance's clock disagrees with the "
        "notice's time (EC2: 120); also how long before an EC2 scheduled event's NotBefore the session stops",
    )
    parser.add_argument("--parallelism", type=int, default=16, help="concurrent S3 transfers")
    parser.add_argument(
        "--keep-manifests",
        type=_at_least_zero,
        default=MANIFESTS_PER_SESSION,
        metavar="N",
        help="keep the newest N of this session's checkpoints, deleting older ones (needs s3:DeleteObject); 0: all",
    )
    parser.add_argument("--region", help="AWS region of the bucket (default: the boto3 chain)")
    parser.add_argument(
        "--s3-write",
        type=_write_options,
        default=S3WriteOptions(),
        metavar="JSON",
        help="what every write carries for the bucket's rules, e.g. "
        '{"encryption": "aws:kms", "kms_key_id": "alias/k", "checksum": "CRC32"} '
        "(spec.json's s3_write; the bootstrap passes it on)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not copy the command's output to the agent's")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def options_from(args: argparse.Namespace) -> AgentOptions:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return AgentOptions(
        run_uri=args.run_uri,
        workdir=args.workdir,
        command=command,
        session=args.session,
        include=args.include,
        exclude=args.exclude,
        sync_interval=args.sync_interval,
        heartbeat_interval=args.heartbeat_interval,
        lease_ttl=args.lease_ttl,
        unwatched_timeout=max(0.0, args.unwatched_timeout),
        log_interval=args.log_interval,
        live_queue=args.live_queue or None,
        live_interval=args.live_interval,
        durable_log_interval=args.durable_log_interval,
        imds_endpoint=args.imds_endpoint,
        imds_poll=args.imds_poll,
        imds_timeout=args.imds_timeout,
        no_imds=args.no_imds,
        require_imds=args.require_imds,
        signal_grace=args.signal_grace,
        sync_reserve=args.sync_reserve,
        min_grace=args.min_grace,
        notice_window=args.notice_window,
        parallelism=max(1, args.parallelism),
        keep_manifests=args.keep_manifests,
        region=args.region,
        passthrough=not args.quiet,
        s3_write=args.s3_write,
    )


def main(argv: Sequence[str] | None = None, prog: str = "grid-resume agent") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Run one spot session of a resumable run.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    configure_logging(args.verbose)
    return run_agent(options_from(args))
