"""Pure rules of restore into a workdir that already holds files: what is kept, written, set aside."""

from __future__ import annotations

import pytest

from airflow_grid_resume.agent.restore import (
    KEEP,
    OVERWRITE,
    SET_ASIDE,
    WRITE,
    RestoreResult,
    kept_dir,
    local_decision,
)
from airflow_grid_resume.agent.scan import PathFilter, kept_original
from airflow_grid_resume.ledger import records


@pytest.mark.parametrize(
    ("local", "wanted", "same", "ours", "expected"),
    [
        (None, "file", False, False, WRITE),  # nothing there: the checkpoint's file is written
        ("file", "file", True, False, KEEP),  # identical: untouched
        ("file", "file", False, False, SET_ASIDE),  # differs (newer local work): kept, never overwritten
        ("link", "link", True, False, KEEP),
        ("link", "link", False, False, SET_ASIDE),
        ("dir", "dir", False, False, KEEP),
        ("dir", "file", False, False, SET_ASIDE),  # a local directory is moved aside, never rmtree'd
        ("file", "dir", False, False, SET_ASIDE),  # a local file where the checkpoint has a directory
        ("link", "dir", False, False, SET_ASIDE),
        ("other", "file", False, False, SET_ASIDE),  # a FIFO or socket
        ("file", "file", False, True, OVERWRITE),  # written by this restore from a manifest that then failed
        ("link", "file", False, True, OVERWRITE),
        ("dir", "file", False, True, SET_ASIDE),  # a directory may hold local files: never overwritten
    ],
)
def test_local_decision_never_overwrites_what_was_there_before(
    local: str | None, wanted: str, same: bool, ours: bool, expected: str
) -> None:
    assert local_decision(local, wanted, same=same, ours=ours) == expected


def test_kept_directories_are_per_session_and_never_shared() -> None:
    assert kept_dir("session-2") == ".grid-resume-kept/session-2"
    assert kept_dir("session-2", 3) == ".grid-resume-kept/session-2.3"


def test_a_kept_copy_is_filtered_as_the_path_it_was_kept_for() -> None:
    """Sync keeps a kept copy exactly when it keeps the original: include/exclude see the original path."""
    assert kept_original(".grid-resume-kept/session-2/ckpt/last.pt") == "ckpt/last.pt"
    assert kept_original(".grid-resume-kept/session-3/.grid-resume-kept/session-2/a") == "a"
    assert kept_original(".grid-resume-kept/session-2") == ""
    assert kept_original("ckpt/last.pt") == "ckpt/last.pt"
    only_ckpt = PathFilter(include=["ckpt/*"], exclude=[".*", "*.tmp"])
    assert only_ckpt.included_file(".grid-resume-kept/session-2/ckpt/last.pt")
    assert not only_ckpt.included_file(".grid-resume-kept/session-2/data/x")
    assert not only_ckpt.excluded(".grid-resume-kept")  # not hidden by the user's ".*"
    assert not only_ckpt.excluded(".grid-resume-kept/session-2/ckpt")
    assert only_ckpt.excluded(".grid-resume-kept/session-2/ckpt/a.tmp")
    assert only_ckpt.excluded(".cache")


def test_the_outcome_and_the_task_log_say_what_was_set_aside_and_where() -> None:
    result = RestoreResult(
        manifest=None, set_aside=[(f"ckpt/{i}.pt", f".grid-resume-kept/session-2/ckpt/{i}.pt") for i in range(25)]
    )
    record = result.set_aside_record()
    assert record == {
        "count": 25,
        "dirs": [".grid-resume-kept/session-2"],
        "paths": sorted(f"ckpt/{i}.pt" for i in range(25))[:20],  # sorted: restore sets aside in parallel
    }
    assert RestoreResult(manifest=None).set_aside_record() is None
    outcome = records.Outcome.from_json(records.Outcome(session=2, status="interrupted", set_aside=record).to_json())
    assert outcome.set_aside == record
    assert outcome.set_aside_note() == (
        "session 2: restore found 25 local file(s) differing from the checkpoint and kept them under "
        ".grid-resume-kept/session-2 in the workdir (synced with it; nothing was overwritten)"
    )
    assert records.Outcome(session=1, status="failed").set_aside_note() is None
    assert "set_aside" not in records.Outcome(session=1, status="failed").to_dict()
