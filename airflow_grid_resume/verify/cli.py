"""``grid-resume verify [OPTIONS] -- COMMAND [ARGS...]``: is a training command resumable?"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence

from airflow_grid_resume.verify.churn import ChurnReport
from airflow_grid_resume.verify.compare import check_key
from airflow_grid_resume.verify.report import render
from airflow_grid_resume.verify.runner import Verifier, VerifyConfig, VerifyResult
from airflow_grid_resume.verify.verdict import Verdict, Window, decide

EXIT_USAGE = 2


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grid-resume verify",
        description="Run a training command as the agent would, uninterrupted and then through seeded spot "
        "interruptions, on a local S3, and say whether it is resumable (exit 0), not (1) or could not be "
        "tested (3). See docs/verify.md.",
    )
    parser.add_argument("--workdir", default=".", help="the execution directory to snapshot (default: .)")
    parser.add_argument("--interruptions", type=int, default=3, metavar="N", help="interruptions (default 3)")
    parser.add_argument("--seed", type=int, help="seed of the interruption points (default: random, printed)")
    parser.add_argument(
        "--notice-seconds", type=_positive, default=120.0, metavar="S", help="spot notice window (EC2: 120)"
    )
    parser.add_argument(
        "--outputs", action="append", default=[], metavar="GLOB", help="final outputs to compare (repeatable)"
    )
    parser.add_argument(
        "--compare-command",
        metavar="CMD",
        help="compares an output whose bytes differ and that verify cannot compare by content (not a torch file, "
        "or no torch here): run as CMD REFERENCE_PATH RESUMED_PATH, exit 0 = equivalent (its stderr is shown)",
    )
    parser.add_argument(
        "--ignore-key",
        action="append",
        default=[],
        metavar="KEY",
        help="in torch outputs, a key not to compare (with all under it), as the report prints it, e.g. "
        "\"['meta']['saved_at']\" (repeatable; listed in the report)",
    )
    parser.add_argument(
        "--progress-regex",
        metavar="REGEX",
        help=r"progress number in the output, first group (e.g. '^step (\d+)'), for scripts that do not print "
        "the protocol's 'grid-resume: progress DONE/TOTAL' lines",
    )
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="as the agent's --include")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="as the agent's --exclude")
    parser.add_argument(
        "--large-mib", type=_positive, default=100.0, metavar="M", help="report files of M MiB or more (100)"
    )
    parser.add_argument(
        "--timeout", type=_positive, default=3600.0, metavar="S", help="limit of the reference run (3600 s)"
    )
    parser.add_argument(
        "--sync-interval", type=_positive, default=300.0, metavar="S", help="the agent's periodic sync (300 s)"
    )
    parser.add_argument("--show-output", action="store_true", help="echo the command's output while it runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for debugging)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def config_from(args: argparse.Namespace) -> VerifyConfig:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return VerifyConfig(
        command=tuple(command),
        workdir=args.workdir,
        interruptions=args.interruptions,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000),
        notice_seconds=args.notice_seconds,
        outputs=tuple(args.outputs),
        compare_command=tuple(shlex.split(args.compare_command or "")),
        ignore_keys=tuple(args.ignore_key),
        progress_regex=args.progress_regex,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        large_bytes=int(args.large_mib * 1024 * 1024),
        timeout=args.timeout,
        sync_interval=args.sync_interval,
        show_output=args.show_output,
        keep=args.keep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    try:
        config = config_from(args)
    except ValueError as exc:  # shlex: unbalanced quotes in --compare-command
        print(f"grid-resume verify: --compare-command: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.command:
        print("grid-resume verify: no command given: put the training command after '--'", file=sys.stderr)
        return EXIT_USAGE
    problem = compare_command_problem(config.compare_command, args.compare_command) or next(
        (p for p in map(check_key, config.ignore_keys) if p), ""
    )
    if problem:
        print(f"grid-resume verify: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if config.interruptions < 1:
        print("grid-resume verify: --interruptions must be 1 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        verifier = Verifier(config, say=lambda msg: print(f"[verify] {msg}", file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"grid-resume verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # so a SIGTERM still cleans up (finally blocks)
    try:
        result = verifier.run()
    except KeyboardInterrupt:
        print("grid-resume verify: stopped; everything it started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    verdict = judge(result)
    print(render(result, verdict), end="")
    return verdict.exit_code


def compare_command_problem(argv: Sequence[str], given: str | None) -> str:
    """What is wrong with ``--compare-command`` (empty when nothing): checked before any run, so that a
    typo does not surface after minutes of training."""
    if given is None:
        return ""
    if not argv:
        return "--compare-command is empty: give the comparator, e.g. --compare-command 'python cmp.py'"
    if shutil.which(argv[0]) is None:
        return f"--compare-command: {argv[0]!r} is not an executable on PATH nor a path to one"
    return ""


def judge(result: VerifyResult) -> Verdict:
    """The verdict on what a run of the verifier measured."""
    config = result.config
    return decide(
        result.reference,
        result.chain,
        window=Window(config.notice_seconds, config.allowed_seconds),
        startup=result.startup,
        outputs=result.outputs,
        output_globs=config.outputs,
        churn=result.churn or ChurnReport(0, 0),
        large_bytes=config.large_bytes,
        command=config.command,
        checkpoints=result.checkpoints,
    )


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
