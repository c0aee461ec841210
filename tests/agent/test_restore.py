"""Pure rules of restore into a workdir that already holds files: what is kept, written, set aside."""

from __future__ import annotations

import hashlib

import pytest

from airflow_grid_resume.agent.restore import (
    KEEP,
    OVERWRITE,
    SET_ASIDE,
    WRITE,
    RestoreResult,
    kept_dir,
    local_decision,
    plan_pack_reads,
)
from airflow_grid_resume.agent.scan import PathFilter, kept_original
from airflow_grid_resume.ledger import records
from airflow_grid_resume.ledger.manifest import (
    FileEntry,
    Manifest,
)


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


SHA = hashlib.sha256(b"x").hexdigest()


PACK = hashlib.sha256(b"pack").hexdigest()


def test_a_fallback_says_which_checkpoint_and_how_many_steps() -> None:
    older = Manifest(1, 1, "t", "final")
    why = ("000002-000001.json", "pack 12ab is corrupt")
    result = RestoreResult(older, fallbacks=[why], steps={"000002-000001.json": 20, "000001-000001.json": 12})
    assert result.steps_lost == 8
    assert result.fallback_record() == {
        "newest": "000002-000001.json",
        "restored": "000001-000001.json",
        "newest_step": 20,
        "restored_step": 12,
        "steps_lost": 8,
    }
    note = result.fallback_note() or ""
    assert "000002-000001.json" in note and "corrupt" in note and "restored the older checkpoint 000001-000001.json"
    assert "about 8 steps" in note
    unknown = RestoreResult(older, fallbacks=[why]).fallback_note() or ""
    assert "unknown" in unknown and "000001-000001.json" in unknown
    assert RestoreResult(older).fallback_note() is None and RestoreResult(older).fallback_record() is None


def test_pack_reads_merge_neighbours_and_split_far_apart_files() -> None:
    def f(name: str, offset: int, size: int) -> FileEntry:
        return FileEntry(name, size, 0o644, 0, SHA, pack=PACK, offset=offset)

    files = [f("c", 5_000_000, 10), f("a", 0, 100), f("b", 100, 50), f("dup", 0, 100), f("d", 5_000_010, 5)]
    runs = plan_pack_reads(files, gap=1024)
    assert [[x.path for x in run] for run in runs] == [["a", "dup", "b"], ["c", "d"]]
