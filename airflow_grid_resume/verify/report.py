"""The report, in plain words: what happened in each session, each check, the verdict. Pure."""

from __future__ import annotations

import shlex

from airflow_grid_resume.verify.chaos import FLOOR_SECONDS
from airflow_grid_resume.verify.records import SessionRecord
from airflow_grid_resume.verify.runner import VerifyResult
from airflow_grid_resume.verify.verdict import Verdict


def render(result: VerifyResult, verdict: Verdict) -> str:
    cfg = result.config
    lines = [
        f"grid-resume verify: {shlex.join(cfg.command)}",
        f"  seed {cfg.seed} (rerun with --seed {cfg.seed}), {_plural(cfg.interruptions, 'interruption')} planned, "
        f"{cfg.notice_seconds:g} s notice (after SIGTERM a command gets half the work left, at least "
        f"{FLOOR_SECONDS:g} s and its start-up, at most {cfg.allowed_seconds:.1f} s)",
        f"  workdir snapshot: {result.snapshot}",
    ]
    if cfg.outputs:
        lines.append(f"  outputs: {' '.join(cfg.outputs)}; {compared_how(cfg.compare_command, cfg.ignore_keys)}")
    if result.points:
        points = ", ".join(f"{p:.2f}" for p in result.points)
        lines.append(
            f"  interruption points: {points} s of work (start-up {result.startup:.2f} s: the time to the "
            "reference's first progress line, less one step, or else to its first output line)"
        )
    if result.kept_dir:
        lines.append(f"  kept: {result.kept_dir}")
    lines.append("")
    for record in [result.reference, *result.chain]:
        lines.append(f"  {record.label:<11} {describe(record)}")
    lines.append("")
    for check in verdict.checks:
        lines.append(f"[{check.status}] {check.name}: {check.summary}")
        lines.extend(f"       {detail}" for detail in check.details)
        if check.fix and check.status in ("FAIL", "WARN", "NOTE", "SKIP"):
            lines.append(f"       how to fix: {check.fix}")
    lines.append("")
    lines.append(f"verdict: {verdict.headline} (exit {verdict.exit_code})")
    return "\n".join(lines) + "\n"


def compared_how(command: tuple[str, ...], ignore_keys: tuple[str, ...] = ()) -> str:
    """How the outputs are compared, in one clause."""
    others = f"others by --compare-command {shlex.join(command)}" if command else "others by their bytes alone"
    ignoring = f" (not comparing {', '.join(ignore_keys)})" if ignore_keys else ""
    return (
        f"equal bytes match; when the bytes differ, torch files (.ckpt, .pt, .pth) are compared tensor by tensor"
        f"{ignoring}, {others}"
    )


def describe(record: SessionRecord) -> str:
    """One line: how this session went."""
    parts = []
    if record.restored_from and not record.restored_from.startswith("000000-"):
        parts.append(f"restored {record.restored_from}")
    if record.started_at is None:
        reason = (record.outcome.reason if record.outcome else "") or (
            record.agent_lines[-1] if record.agent_lines else ""
        )
        return f"the command never started (agent exit {record.agent_exit}): {reason}"
    if record.interrupted:
        planned = f" (planned {record.planned_offset:.2f} s)" if record.planned_offset is not None else ""
        if record.planned_step is not None:
            planned = f" (notice planned at step {_n(record.planned_step)})"
        parts.append(f"SIGTERM {_s(record.ran_before_sigterm)} in{planned}")
        allowed = f" ({_s(record.grace_seconds)} allowed)" if record.grace_seconds is not None else ""
        if record.killed:
            parts.append(f"still running at the deadline{allowed}: killed")
        else:
            if record.shell_returncode is not None:
                parts.append(f"its shell died of it (exit {record.shell_returncode}), the trainer went on")
            parts.append(f"exit {record.returncode} {_s(record.exit_latency)} after it{allowed}")
        if record.manifest:
            parts.append(f"the agent's final sync committed {record.manifest}")
    elif record.timed_out:
        parts.append("did not finish in time: stopped by verify")
    elif record.status == "succeeded":
        if record.notice_posted_at is not None and record.started_at is not None:
            posted = record.notice_posted_at - record.started_at
            parts.append(
                f"succeeded in {_s(record.duration)}: it finished before the agent saw the notice posted "
                f"{posted:.2f} s in, so it was not interrupted"
            )
        elif record.planned_offset is not None or record.planned_step is not None:
            point = (
                f"step {_n(record.planned_step)}"
                if record.planned_step is not None
                else f"{(record.planned_offset or 0.0):.2f} s"
            )
            parts.append(
                f"succeeded in {_s(record.duration)}: it finished before its interruption point ({point}), "
                "so it was not interrupted"
            )
        else:
            parts.append(f"succeeded in {_s(record.duration)}")
    else:
        reason = (record.outcome.reason if record.outcome else "") or record.status
        parts.append(f"{record.status}: {reason} after {_s(record.duration)}")
    if record.progress:
        values = record.progress_values
        parts.append(f"progress {_n(values[0])}..{_n(max(values))}")
    return "; ".join(parts)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f} s"
