"""Deciding, from the session records alone, whether a command is resumable. Pure: no I/O.

Four checks, and a fifth when the command pipes its output (docs/verify.md explains each and how to fix
what it finds):

- ``pipe``: the command's output goes through a pipe (``python train.py | tee log``), which the group's
  SIGTERM breaks: it fails when a session shows it (a broken pipe after SIGTERM, or a failed check);

- ``sigterm``: every interrupted session's command stopped on SIGTERM (exited 0 in time, and did not
  go on working until it happened to finish);
- ``resume``: no session crashed or hung after a restore, and the interruptions did not throw the
  work away (from progress numbers when the output has them, else from wall time);
- ``outputs``: the files matching ``--outputs`` equal the reference's (bytes, or content: ``verify.compare``);
- ``sync``: large or churning files (advice only, never a failure).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from airflow_grid_resume.ledger.checkpoints import MARKED, is_complete
from airflow_grid_resume.verify.chaos import FLOOR_SECONDS
from airflow_grid_resume.verify.churn import ChurnReport, suggest_excludes
from airflow_grid_resume.verify.outputs import OutputDiff
from airflow_grid_resume.verify.probe import SHELLS
from airflow_grid_resume.verify.records import SessionRecord

PASS, NOTE, WARN, FAIL, SKIP = "PASS", "NOTE", "WARN", "FAIL", "SKIP"

EXIT_RESUMABLE = 0
EXIT_NOT_RESUMABLE = 1
EXIT_INCONCLUSIVE = 3

# Time heuristic: share of the work done before the interruptions that the final session did not
# have to do again. A script that starts over keeps about none of it; one that resumes, nearly all.
KEPT_FAIL_BELOW = 0.5
KEPT_WARN_BELOW = 0.75
# Progress: an interruption that costs more than this share of the whole run is worth a warning.
LOST_WARN_ABOVE = 0.25
# Exit latency after SIGTERM above this share of what the agent allows is cutting it close.
LATENCY_WARN_ABOVE = 0.5
# "Went on working after SIGTERM": by progress, more steps after it than the one under way; by time, an
# exit this share of the work left or later, when enough was left (below that, exiting takes as long).
STEPS_AFTER_SIGTERM = 1
KEPT_WORKING_SHARE = 0.8
KEPT_WORKING_MIN_LEFT = 0.5
NEXT_WORK_SHARE = 0.25  # ... or the next session had less than this share of that work to do
# Output lines reach verify up to this late (the agent's output tail polls every 50 ms).
LINE_DELAY = 0.25
# Errors that say a file ended too soon: what loading a checkpoint cut mid-write looks like.
_TRUNCATED = re.compile(
    r"JSONDecodeError|UnpicklingError|EOFError|unexpected end|Unexpected EOF|truncated|PytorchStreamReader|"
    r"BadZipFile|not a zip file|corrupt|ran out of input|HDF5|safetensors",
    re.IGNORECASE,
)
# What a write into a pipe whose reader is gone looks like, from Python and from C programs.
_BROKEN_PIPE = re.compile(r"BrokenPipeError|Broken pipe|EPIPE|SIGPIPE")
# Programs that read a command's output to log or filter it: a pipe into one of these is the pipe the
# group's SIGTERM breaks (a pipe into the trainer itself, ``cat list | python train.py``, is not).
OUTPUT_READERS = frozenset(
    {"tee", "cat", "logger", "ts", "grep", "sed", "awk", "gawk", "gzip", "head", "tail", "cut", "tr", "pv"}
)
CHURN_MIN_BYTES = 1024 * 1024  # churning files smaller than this are cheap to re-upload: listed, not advised

FIX_SIGTERM_KILLED = (
    "handle SIGTERM: set a flag in the handler, save a checkpoint at the next safe point and exit 0 well within "
    "the notice (EC2 gives 120 s, minus the time the final sync needs). A handler that never runs looks the same: "
    "SIG_IGN, a shell wrapper that does not pass signals on (use exec), a C extension that blocks for long."
)
FIX_SIGTERM_IGNORED = (
    "handle SIGTERM from the first line: set a flag in the handler, and in the training loop save a checkpoint "
    "and exit 0 as soon as it is set. It exited 0 here only because the run was short enough to finish within the "
    "notice; on EC2 a longer run is killed at the deadline and loses the work since its last periodic checkpoint. "
    "Check the children too (a data-loader worker or a wrapper that ignores it) and use exec in shell wrappers."
)
FIX_SIGTERM_143 = (
    "install a SIGTERM handler that saves a checkpoint and then exits 0; dying of the signal throws away the "
    "work since the last periodic checkpoint and can cut a checkpoint write in half."
)
FIX_SIGTERM_CODE = "after saving on SIGTERM, exit 0: any other code tells the agent the state may not be saved."
FIX_CRASH = (
    "the usual cause is a checkpoint cut mid-write: write it to a temporary file in the same directory, flush and "
    "fsync it, then os.replace() it over the old one, so a restore only ever sees a whole checkpoint."
)
FIX_START_OVER = (
    "at start, look for the checkpoint in the working directory (the agent restores it there; "
    "GRID_RESUME_RESUMED=1 says one was restored) and continue from it: model, optimizer, scheduler, RNG states, "
    "step/epoch counters."
)
FIX_LOSS = "checkpoint more often, or save on SIGTERM, so an interruption costs less work."
FIX_OUTPUTS = (
    "the outputs must not depend on where the run was interrupted: save and restore everything the computation "
    "depends on (RNG states, data-loader position, optimizer and scheduler state, running metrics), and do not "
    "write per-session values (times, session numbers) into output files."
)
FIX_PIPE = (
    "do not pipe the training output: write it to a file (python train.py > train.log 2>&1, or a log file the "
    "script opens itself), or leave it to the agent, which ships the command's output to the task log and the "
    "ledger. If a pipe must stay, make its reader ignore SIGTERM: python train.py | (trap '' TERM; exec tee "
    "train.log)."
)
FIX_SYNC = (
    "exclude what the script does not need to resume (logs, caches, event files, copies of the data) with the "
    "agent's --exclude; keep the checkpoint itself."
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    summary: str
    details: tuple[str, ...] = ()
    fix: str = ""


@dataclass(frozen=True)
class Window:
    """The notice the emulated EC2 gives, and how long the agent lets the command run after SIGTERM."""

    notice_seconds: float
    allowed_seconds: float


@dataclass(frozen=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)
    exit_code: int = EXIT_RESUMABLE
    headline: str = ""

    @property
    def resumable(self) -> bool:
        return self.exit_code == EXIT_RESUMABLE

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


def decide(
    reference: SessionRecord,
    chain: Sequence[SessionRecord],
    *,
    window: Window,
    startup: float,
    outputs: OutputDiff | None,
    output_globs: Sequence[str],
    churn: ChurnReport | None,
    large_bytes: int,
    command: Sequence[str] = (),
    checkpoints: dict[str, dict] | None = None,
) -> Verdict:
    """The verdict. Exit 0: resumable; 1: a check failed; 3: nothing could be tested."""
    if reference.status != "succeeded":
        reason = (reference.outcome.reason if reference.outcome else "") or reference.status
        check = Check(
            "reference",
            FAIL,
            f"the command does not succeed even without interruptions ({reason})",
            _evidence(reference),
            "make it run to the end with exit 0 first (try it with grid-resume agent, or locally in a copy of the "
            "directory).",
        )
        return Verdict([check], EXIT_INCONCLUSIVE, "INCONCLUSIVE: the reference run failed")
    if not any(r.interrupted for r in chain):
        check = Check(
            "sigterm",
            SKIP,
            "no interruption reached the command: it finished (or stopped) before the first chosen point",
            tuple(f"{r.label}: {r.status}" for r in chain),
            "use a run long enough to interrupt (a few seconds at least), or a different --seed.",
        )
        return Verdict([check], EXIT_INCONCLUSIVE, "INCONCLUSIVE: nothing was interrupted")
    late = [r for r in chain if r.interrupted]
    if all(finished_before_sigterm(r, reference) for r in late):
        check = Check(
            "sigterm",
            SKIP,
            "interruption landed after the script finished; nothing was tested: the command had reported the "
            "reference's last step before its SIGTERM came",
            tuple(f"{r.label}: SIGTERM {_s(r.ran_before_sigterm)} in, after its last step" for r in late),
            "use a longer run (the notice needs about a second to reach the command on a busy machine), or "
            "run verify again.",
        )
        return Verdict([check], EXIT_INCONCLUSIVE, "INCONCLUSIVE: the interruption came after the last step")
    finished = bool(chain) and chain[-1].status == "succeeded"
    checks = [
        check_sigterm(chain, window, reference, startup),
        check_resume(reference, chain, startup),
        check_outputs(outputs, output_globs, finished),
        check_sync(churn, large_bytes),
    ]
    pipe = check_pipe(command, chain, failed=any(c.status == FAIL for c in checks))
    checks = [pipe, *checks] if pipe is not None else checks
    markers = check_markers(chain, checkpoints or {})
    if markers is not None:
        checks.append(markers)
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        return Verdict(checks, EXIT_NOT_RESUMABLE, f"NOT RESUMABLE ({', '.join(failed)})")
    if checks[0].status == SKIP:
        return Verdict(checks, EXIT_INCONCLUSIVE, "INCONCLUSIVE: too short to tell whether it stops on SIGTERM")
    warned = [c.name for c in checks if c.status == WARN]
    return Verdict(checks, EXIT_RESUMABLE, "RESUMABLE" + (f", with warnings ({', '.join(warned)})" if warned else ""))


def kept_working(
    record: SessionRecord,
    reference: SessionRecord | None = None,
    following: SessionRecord | None = None,
    startup: float = 0.0,
) -> str | None:
    """Why an interrupted session that exited 0 looks like it ignored SIGTERM and simply finished, or None.

    By progress when the session printed any: more than the step under way done after the SIGTERM, up to the
    reference's last step. Otherwise by time: it exited only when about all the work left at the SIGTERM
    would have been done, or the next session found next to nothing left to do (and enough was left to tell
    that from the time a save and exit take)."""
    if not record.interrupted or record.killed or record.returncode != 0 or record.sigterm_at is None:
        return None
    if record.progress:
        before = record.progress_by(record.sigterm_at + LINE_DELAY)
        last = max(record.progress_values)
        end = max(reference.progress_values) if reference is not None and reference.progress else None
        after = last - (before if before is not None else min(record.progress_values))
        if after > STEPS_AFTER_SIGTERM and (end is None or last >= end):
            at = _n(before) if before is not None else "none yet"
            return f"went on to step {_n(last)}, the end of the run, after SIGTERM (progress at SIGTERM: {at})"
        return None
    latency, left = record.exit_latency, record.work_left
    if latency is None or left is None or left < KEPT_WORKING_MIN_LEFT:
        return None
    if latency >= KEPT_WORKING_SHARE * left:
        return (
            f"exited {latency:.2f} s after SIGTERM, when about {left:.2f} s of work were left: it went on working "
            "until it finished"
        )
    if following is not None and following.status == "succeeded" and following.duration is not None:
        next_work = following.duration - startup
        if next_work < NEXT_WORK_SHARE * left:
            return (
                f"exited {latency:.2f} s after SIGTERM, when about {left:.2f} s of work were left, and the next "
                f"session had only {max(next_work, 0.0):.2f} s of work to do: it went on working until it finished"
            )
    return None


def finished_before_sigterm(record: SessionRecord, reference: SessionRecord | None) -> bool:
    """Its progress had reached the reference's last step before the SIGTERM came: it was done."""
    if reference is None or not reference.progress or record.sigterm_at is None:
        return False
    before = record.progress_by(record.sigterm_at)
    return before is not None and before >= max(reference.progress_values)


def check_sigterm(
    chain: Sequence[SessionRecord], window: Window, reference: SessionRecord | None = None, startup: float = 0.0
) -> Check:
    interrupted = [r for r in chain if r.interrupted]
    allowed = window.allowed_seconds
    killed = [r for r in interrupted if r.killed]
    nexts = [chain[i + 1] if i + 1 < len(chain) else None for i in range(len(chain))]
    ignored = [
        (r, why)
        for r, following in zip(chain, nexts, strict=True)
        if r.interrupted and (why := kept_working(r, reference, following, startup))
    ]
    # A SIGTERM that lands while the interpreter exits after the last step cannot reach a handler any more.
    done_first = [r for r in interrupted if finished_before_sigterm(r, reference)]
    died = [r for r in interrupted if not r.killed and r.returncode == 143 and r not in done_first]
    other = [r for r in interrupted if not r.killed and r.returncode not in (0, 143) and r not in done_first]
    if killed:
        grace = killed[0].grace_seconds or allowed
        return Check(
            "sigterm",
            FAIL,
            f"ignores SIGTERM: still running {grace:.1f} s after it, so the agent killed it (verify allows half "
            f"the work left, at least {FLOOR_SECONDS:g} s and its start-up, at most what a {window.notice_seconds:g} s "
            "notice leaves)",
            tuple(
                f"{r.label}: SIGTERM {_s(r.ran_before_sigterm)} in, still running {_s(r.grace_seconds)} later: killed"
                for r in killed
            ),
            FIX_SIGTERM_KILLED,
        )
    if ignored:
        return Check(
            "sigterm",
            FAIL,
            f"ignores SIGTERM: {ignored[0][1]}",
            tuple(f"{r.label}: SIGTERM {_s(r.ran_before_sigterm)} in; {why}" for r, why in ignored),
            FIX_SIGTERM_IGNORED,
        )
    if died:
        return Check(
            "sigterm",
            FAIL,
            "dies of SIGTERM (exit 143) instead of saving its state and exiting 0",
            tuple(f"{r.label}: exit 143 {_s(r.exit_latency)} after SIGTERM" for r in died),
            FIX_SIGTERM_143,
        )
    if other:
        return Check(
            "sigterm",
            FAIL,
            f"exits {other[0].returncode} after SIGTERM instead of 0",
            tuple(f"{r.label}: exit {r.returncode} {_s(r.exit_latency)} after SIGTERM" for r in other),
            FIX_SIGTERM_CODE,
        )
    telling = [r for r in interrupted if r.progress or (r.work_left or 0.0) >= KEPT_WORKING_MIN_LEFT]
    if not telling:
        return Check(
            "sigterm",
            SKIP,
            f"too short to tell whether it stops on SIGTERM or ignores it and finishes: every SIGTERM came with "
            f"less than {KEPT_WORKING_MIN_LEFT:g} s of work left, and it prints no progress lines",
            tuple(f"{r.label}: exit {r.returncode} {_s(r.exit_latency)} after SIGTERM" for r in interrupted),
            "make the verify run longer (a few seconds of work), or print 'grid-resume: progress DONE/TOTAL' lines.",
        )
    # Against the notice's own window: verify's shorter one is only there to catch scripts that ignore SIGTERM.
    worst = max((r.exit_latency for r in interrupted if r.exit_latency is not None), default=0.0)
    worst_allowed = allowed
    details = tuple(
        f"{r.label}: SIGTERM after its last step, while it was exiting (exit {r.returncode}): not a test of it"
        if r in done_first
        else f"{r.label}: exit 0 {_s(r.exit_latency)} after SIGTERM (verify allowed {_s(r.grace_seconds)})"
        + (
            f"; its shell died of the SIGTERM at once (exit {r.shell_returncode}) while the trainer saved in the "
            "group's time: the agent, like verify, takes the trainer's exit as the command's"
            if r.shell_returncode is not None
            else ""
        )
        for r in interrupted
    )
    where = f"a {window.notice_seconds:g} s notice leaves {allowed:.1f} s"
    if worst > LATENCY_WARN_ABOVE * worst_allowed:
        return Check(
            "sigterm",
            WARN,
            f"exits 0 on SIGTERM, but takes up to {worst:.2f} s ({where}): close to being killed",
            details,
            "save less on SIGTERM (the periodic checkpoint plus what changed since) or save faster.",
        )
    return Check("sigterm", PASS, f"exits 0 on SIGTERM within {worst:.2f} s ({where})", details)


def piped_into(command: Sequence[str]) -> str | None:
    """The logging or filtering program a shell command pipes its output into (``tee`` for ``bash -c
    "python train.py | tee log"``), or None: only a ``SHELL -c STRING`` command is read, ``||`` is not a
    pipe, and neither is one into another kind of program (the trainer reading its input)."""
    if len(command) < 3 or os.path.basename(command[0]) not in SHELLS:
        return None
    flags = [i for i, arg in enumerate(command[1:-1], 1) if re.fullmatch(r"-[a-z]*c[a-z]*", arg)]
    if not flags:
        return None
    script, quote, i = command[flags[0] + 1], "", 0
    while i < len(script):
        char = script[i]
        if char == "\\" and quote != "'":
            i += 2
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or script[i - 1].isspace()):
            i = script.find("\n", i)
            if i < 0:
                break
        elif char == "|" and script[i + 1 : i + 2] != "|" and script[i - 1 : i] != "|":
            rest = script[i + 1 :].lstrip("&").split()
            reader = os.path.basename(rest[0]) if rest else ""
            if reader in OUTPUT_READERS:
                return reader
        i += 1
    return None


def check_pipe(command: Sequence[str], chain: Sequence[SessionRecord], *, failed: bool) -> Check | None:
    """Whether the command's output goes through a pipe that the group's SIGTERM breaks.

    The SIGTERM goes to the whole group: the pipe's reader (tee) dies at once, and the trainer's next
    print after it gets EPIPE/SIGPIPE, usually before or while it saves. A FAIL names that cause when a
    session shows a broken pipe, or when the command pipes and another check failed; a pipe that did no
    harm here is a warning (any print during the save would break it)."""
    reader = piped_into(command)
    broken = [
        r.label for r in chain if r.interrupted and any(_BROKEN_PIPE.search(line) for line in _command_lines(r.tail))
    ]
    if reader is None and not broken:
        return None
    cause = (
        f"the command's output goes through a pipe ({'| ' + reader if reader else 'somewhere in its scripts'}): "
        f"when the group gets SIGTERM, {reader or 'the reader'} exits and the trainer's next print gets SIGPIPE"
    )
    if broken:
        return Check(
            "pipe", FAIL, f"{cause}; it broke the save here", tuple(f"{b}: broken pipe after SIGTERM" for b in broken),
            FIX_PIPE,
        )  # fmt: skip
    if failed:
        return Check("pipe", FAIL, f"{cause}, which can cut its save short (see the failed checks)", (), FIX_PIPE)
    return Check(
        "pipe", WARN, f"{cause}: it did no harm here only because nothing was printed while it saved", (), FIX_PIPE
    )


def check_resume(reference: SessionRecord, chain: Sequence[SessionRecord], startup: float) -> Check:
    details: list[str] = []
    for previous, record in pairwise(chain):
        if previous.manifest and record.restored_from and record.restored_from != previous.manifest:
            fallbacks = record.outcome.restore_fallbacks if record.outcome else None
            details.append(
                f"{record.label} restored {record.restored_from}, not {previous.manifest} "
                f"(the checkpoint {previous.label} left): {fallbacks}"
            )
    for previous, record in pairwise(chain):
        if record.crashed:
            code = record.outcome.exit_code if record.outcome else None
            tail = _command_lines((record.outcome.tail if record.outcome else []) or record.tail)
            truncated = next((line for line in reversed(tail) if _TRUNCATED.search(line)), None)
            why = (
                f": the restored checkpoint looks truncated, interrupted mid-write ({truncated.strip()})"
                if truncated
                else f" (exit {code}, see its last lines)"
            )
            return Check(
                "resume",
                FAIL,
                f"crashes after resuming: {record.label} failed {_s(record.duration)} after it restored the "
                f"checkpoint {previous.label} saved when interrupted{why}",
                (*details, *(f"| {line}" for line in tail[-8:])),
                FIX_CRASH,
            )
        if record.timed_out:
            return Check(
                "resume",
                FAIL,
                f"hangs after resuming: {record.label} did not finish within its time limit",
                (*details, *(f"| {line}" for line in record.tail[-8:])),
                FIX_CRASH,
            )
    final = chain[-1]
    if final.status != "succeeded":
        return Check(
            "resume",
            FAIL,
            f"the interrupted run did not finish: {final.label} ended {final.status}",
            (*details, *(f"| {line}" for line in final.tail[-8:])),
        )
    by_progress = progress_losses(reference, chain)
    by_time = time_loss(reference, chain, startup)
    if by_time is not None:
        work_done, lost = by_time
        count = sum(1 for r in chain if r.interrupted)
        details.append(
            f"wall time: the sessions worked {work_done:.1f} s before being interrupted; the final session needed "
            f"{_s(final.duration)} against the reference's {_s(reference.duration)}: about {max(lost, 0):.1f} s of "
            f"work lost in all ({max(lost, 0) / count:.1f} s per interruption)"
        )
    if by_progress:
        total = _span(reference)
        lines = [
            f"interruption {i}: reached {_n(reached)}, resumed at {_n(first)}: "
            + ("STARTED OVER" if over else f"{_n(lost)} redone ({lost / total:.0%} of the run)" if total else "")
            for i, (reached, first, lost, over) in enumerate(by_progress, 1)
        ]
        over = [i for i, (*_, started_over) in enumerate(by_progress, 1) if started_over]
        if over:
            return Check(
                "resume",
                FAIL,
                "starts over: after interruption "
                + ", ".join(map(str, over))
                + " it began again from the first step instead of its checkpoint",
                (*lines, *details),
                FIX_START_OVER,
            )
        worst = max(lost for _, _, lost, _ in by_progress)
        if total and worst > LOST_WARN_ABOVE * total:
            return Check(
                "resume",
                WARN,
                f"resumes, but an interruption cost up to {_n(worst)} steps ({worst / total:.0%} of the run)",
                (*lines, *details),
                FIX_LOSS,
            )
        return Check(
            "resume",
            PASS,
            f"resumes from its checkpoint: at most {_n(worst)} step{'' if worst == 1 else 's'} redone per interruption",
            (*lines, *details),
        )
    if by_time is None:
        return Check("resume", SKIP, "could not measure the work kept (no timings)", tuple(details))
    work_done, lost = by_time
    kept = 1.0 - lost / work_done if work_done > 0 else 1.0
    if work_done > 0 and kept < KEPT_FAIL_BELOW:
        return Check(
            "resume",
            FAIL,
            f"starts over (or loses most of its work): the final session needed {_s(final.duration)}, about as "
            f"long as the whole reference run ({_s(reference.duration)}); only {max(kept, 0):.0%} of the "
            f"{work_done:.1f} s worked before the interruptions was kept",
            tuple(details),
            FIX_START_OVER,
        )
    if work_done > 0 and kept < KEPT_WARN_BELOW:
        return Check(
            "resume",
            WARN,
            f"resumes, but keeps only {kept:.0%} of the work done before the interruptions",
            tuple(details),
            FIX_LOSS,
        )
    return Check(
        "resume",
        PASS,
        f"resumes: kept about {min(kept, 1.0):.0%} of the work done before the interruptions (by wall time; "
        "print 'grid-resume: progress DONE/TOTAL' lines for a step count)",
        tuple(details),
    )


def progress_losses(reference: SessionRecord, chain: Sequence[SessionRecord]) -> list[tuple[float, float, float, bool]]:
    """Per interruption: (progress reached so far, first progress after the resume, units redone,
    started over). Empty when the output carries no progress numbers to compare."""
    ref = reference.progress_values
    if not ref:
        return []
    first_ref, unit = ref[0], _unit(ref)
    out = []
    reached: float | None = None
    for record, following in pairwise(chain):
        if record.progress_values:
            reached = max(record.progress_values + ([reached] if reached is not None else []))
        if not record.interrupted or reached is None or not following.progress_values:
            continue
        first = following.progress_values[0]
        started_over = first <= first_ref < reached
        out.append((reached, first, max(0.0, reached - first + unit), started_over))
    return out


def time_loss(reference: SessionRecord, chain: Sequence[SessionRecord], startup: float) -> tuple[float, float] | None:
    """(work seconds done before the interruptions, seconds of it lost), from wall time.

    A session's work is its run time after start-up; what the final session did not have to redo
    was kept. Start-up is counted once per session, so repeated start-ups are not counted as loss."""
    final = chain[-1]
    if reference.duration is None or final.duration is None:
        return None
    ran = [r.ran_before_stop for r in chain[:-1] if r.interrupted]
    if not ran or any(r is None for r in ran):
        return None
    work_done = sum(max(0.0, r - startup) for r in ran if r is not None)
    lost = work_done + max(0.0, final.duration - startup) - max(0.0, reference.duration - startup)
    return work_done, lost


def check_outputs(outputs: OutputDiff | None, globs: Sequence[str], finished: bool) -> Check:
    if not globs:
        return Check("outputs", SKIP, "not compared: pass --outputs GLOB (repeatable) to name the final outputs")
    if not finished or outputs is None:
        return Check("outputs", SKIP, "not compared: the interrupted run did not finish")
    if outputs.compared == 0:
        return Check(
            "outputs",
            WARN,
            f"--outputs {' '.join(globs)} matched no file in either run's final checkpoint",
            fix="outputs are compared as the agent syncs them: check the glob and that they are not excluded.",
        )
    equivalent = []
    for p in outputs.equivalent:
        c = outputs.contents[p]
        equivalent += [f"{p}: {c.summary}", *(f"  {d}" for d in c.details)]
    if not outputs.matches:
        details = []
        for p in outputs.different:
            found = outputs.contents.get(p)
            details.append(f"differs: {p}" + (f": {found.summary}" if found else ""))
            details += [f"  {d}" for d in (found.details if found else ())]
        details += [f"missing after interruptions: {p}" for p in outputs.missing]
        details += [f"only after interruptions: {p}" for p in outputs.extra]
        names = outputs.different + outputs.missing + outputs.extra
        return Check(
            "outputs",
            FAIL,
            f"the final outputs differ from the reference's: {', '.join(names)}",
            tuple(details + equivalent),
            FIX_OUTPUTS,
        )
    matched = sorted(outputs.same + outputs.equivalent)
    how = ""
    if outputs.equivalent:
        how = (
            " (by content)" if not outputs.same else f" ({len(outputs.equivalent)} by content, the rest byte for byte)"
        )
    return Check(
        "outputs",
        PASS,
        f"{len(matched)} output files match the reference: {', '.join(matched)}{how}",
        tuple(equivalent),
    )


def check_sync(churn: ChurnReport | None, large_bytes: int) -> Check:
    if churn is None or churn.syncs == 0:
        return Check("sync", SKIP, "no synced checkpoint to analyse")
    advised = [f for f in churn.findings if f.large or f.size >= CHURN_MIN_BYTES]
    small = [f.path for f in churn.churning if f not in advised]
    details = []
    for f in advised:
        what = []
        if f.large:
            what.append(f"large ({_mib(f.size)})")
        if f.churns:
            what.append(f"changed at every one of its {f.syncs} syncs ({_mib(f.bytes_reuploaded)} uploaded again)")
        elif f.changes:
            what.append(f"changed at {f.changes} of {f.syncs - 1} syncs")
        details.append(f"{f.path}: {', '.join(what)}" + ("" if f.churns or f.large else f" ({_mib(f.size)})"))
    if small:
        details.append(f"small files that change at every sync (cheap; expected of a checkpoint): {', '.join(small)}")
    context = f"{churn.syncs} sync{'' if churn.syncs == 1 else 's'}, {_mib(churn.total_bytes)} in the last one"
    if not advised:
        return Check(
            "sync",
            PASS,
            f"nothing large (>= {_mib(large_bytes)}) or large and changing at every sync ({context})",
            tuple(details),
        )
    suggestion = " ".join(f"--exclude '{g}'" for g in suggest_excludes(advised))
    return Check(
        "sync",
        NOTE,
        f"large or churning files ({context}); consider: {suggestion}",
        tuple(details),
        FIX_SYNC,
    )


FIX_MARKERS = (
    "print the marker once every file of the checkpoint is written (after the save returns), write each file by "
    "rename, and leave a moment before the next checkpoint's first write."
)


def check_markers(chain: Sequence[SessionRecord], checkpoints: dict[str, dict]) -> Check | None:
    """Whether the script's ``grid-resume: checkpoint`` markers were honoured: captures committed as marked
    checkpoints, and every resumed session restored a complete one. None when the script prints none."""
    printed = sum(r.markers for r in chain)
    if not printed:
        return None
    marked = sorted(n for n, extra in checkpoints.items() if extra.get("checkpoint") == MARKED)
    torn = [
        f"{r.label} restored {r.outcome.restored_from}, not a complete checkpoint"
        for r in chain
        if r.outcome
        and r.outcome.restored_from in checkpoints
        and not is_complete(checkpoints[r.outcome.restored_from])
    ]
    dropped = sum(r.markers_dropped for r in chain)
    context = f"{printed} marker{'' if printed == 1 else 's'} printed, {len(marked)} marked checkpoint(s) committed"
    if torn:
        return Check(
            "markers",
            FAIL,
            f"a session resumed from a checkpoint no marker named ({context})",
            tuple(torn),
            FIX_MARKERS,
        )
    if dropped:
        return Check(
            "markers",
            WARN,
            f"{dropped} capture(s) at a marker could not be committed ({context}): the agent drops one whose files "
            "were replaced after the marker before it linked them, or were written in place since",
            (),
            FIX_MARKERS,
        )
    return Check(
        "markers", PASS, f"{context}; every resumed session restored a complete checkpoint", tuple(marked[-3:])
    )


def _command_lines(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if not line.startswith("[grid-resume]")]


def _evidence(record: SessionRecord) -> tuple[str, ...]:
    """The last lines that explain a failed session: its output tail, else the agent's own lines."""
    tail = _command_lines((record.outcome.tail if record.outcome else []) or record.tail)
    return tuple(f"| {line}" for line in (tail[-10:] if tail else record.agent_lines[-5:]))


def _unit(values: Sequence[float]) -> float:
    steps = [b - a for a, b in pairwise(values) if b > a]
    return min(steps) if steps else 1.0


def _span(record: SessionRecord) -> float:
    values = record.progress_values
    return (max(values) - values[0] + _unit(values)) if values else 0.0


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f} s"


def _mib(size: float) -> str:
    return f"{size / 1048576:.1f} MiB"
