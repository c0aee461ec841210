"""The edge of the content comparison: the two versions of each output whose bytes differ are read
from the runs' final manifests into a scratch directory, then compared as ``verify.compare``
decides (torch, the user's ``--compare-command``, or the bytes alone)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence

from airflow_grid_resume.ledger.manifest import FileEntry, Manifest
from airflow_grid_resume.ledger.paths import safe_target
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.verify import torchfiles
from airflow_grid_resume.verify.compare import (
    BYTES,
    LIGHTNING_RULES,
    TORCH,
    Comparison,
    IgnoreRule,
    bytes_verdict,
    command_verdict,
    comparison_for,
    user_rule,
)
from airflow_grid_resume.verify.outputs import OutputDiff

COMMAND_TIMEOUT = 600.0


def compare_contents(
    diff: OutputDiff,
    runs: Sequence[tuple[RunLedger, Manifest]],
    scratch: str,
    command: Sequence[str] = (),
    say: Callable[[str], None] = lambda _msg: None,
    ignore_keys: Sequence[str] = (),
) -> OutputDiff:
    """``diff`` with a content comparison for every output whose bytes differ; ``runs`` is (ledger, final
    manifest) of the reference, then of the interrupted run."""
    if not diff.differ:
        return diff
    has_torch = torchfiles.torch_available()
    rules = (*LIGHTNING_RULES, *(user_rule(k) for k in ignore_keys))
    contents = {}
    for path in diff.differ:
        method = comparison_for(path, torch_available=has_torch, command=command)
        if method == BYTES:
            contents[path] = bytes_verdict(path, torch_available=has_torch)
            continue
        reference, resumed = (
            _fetch(ledger, _entry(manifest, path), os.path.join(scratch, side))
            for (ledger, manifest), side in zip(runs, ("reference", "interrupted"), strict=True)
        )
        say(f"{path}: the bytes differ, comparing the content ({'torch' if method == TORCH else shlex.join(command)})")
        contents[path] = (
            _compare_torch(path, reference, resumed, rules)
            if method == TORCH
            else (run_command(command, path, reference, resumed))
        )
    return dataclasses.replace(diff, contents=contents)


def run_command(command: Sequence[str], path: str, reference: str, resumed: str) -> Comparison:
    """``COMMAND REFERENCE_PATH RESUMED_PATH``; exit 0 = equivalent."""
    shown = shlex.join(command)
    try:
        proc = subprocess.run(
            [*command, reference, resumed],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return command_verdict(path, shown, None, stderr, f"{shown} did not end within {COMMAND_TIMEOUT:.0f} s")
    except OSError as exc:
        return command_verdict(path, shown, None, "", f"cannot run {shown}: {exc}")
    return command_verdict(path, shown, proc.returncode, proc.stderr)


def _compare_torch(
    path: str, reference: str, resumed: str, rules: Sequence[IgnoreRule] = LIGHTNING_RULES
) -> Comparison:
    try:
        return torchfiles.compare_files(path, reference, resumed, rules)
    except Exception as exc:  # a file torch cannot load: its bytes differ, that is all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return Comparison(
            path,
            TORCH,
            False,
            "the bytes differ, and torch could not load it to compare the content",
            (f"torch.load: {type(exc).__name__}: {first}",),
        )


def _entry(manifest: Manifest, path: str) -> FileEntry:
    return next(f for f in manifest.files if f.path == path)


def _fetch(ledger: RunLedger, entry: FileEntry, root: str) -> str:
    """The file's bytes as the manifest stores them (whole, in chunks or in a pack), under ``root``."""
    target = safe_target(root, entry.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        if entry.chunks:
            for chunk in entry.chunks:
                out.write(ledger.get_blob(chunk))
        elif entry.pack:
            out.write(ledger.get_pack_range(entry.pack, entry.offset, entry.size))
        elif entry.size:
            out.write(ledger.get_blob(entry.sha256))
    return target
