"""ledger/checkpoints.py: what a manifest says of its checkpoint, and what retention must keep. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.ledger.checkpoints import EXITED, MARKED, manifest_extra, newest_complete_kept

COMPLETE, TORN, PLAIN = manifest_extra(True, MARKED), manifest_extra(True, None), manifest_extra(False, None)


def test_the_newest_complete_checkpoint_is_kept_when_the_newest_are_all_torn() -> None:
    assert newest_complete_kept([TORN, TORN, COMPLETE, COMPLETE], keep=2) == 2
    assert newest_complete_kept([TORN, manifest_extra(True, EXITED), TORN], keep=1) == 1


def test_nothing_more_is_kept_when_a_kept_one_is_complete_or_markers_are_not_used() -> None:
    assert newest_complete_kept([COMPLETE, TORN, COMPLETE], keep=1) is None
    assert newest_complete_kept([TORN, COMPLETE], keep=2) is None
    assert newest_complete_kept([PLAIN, PLAIN, PLAIN], keep=1) is None
    assert newest_complete_kept([TORN, TORN], keep=1) is None  # no complete one exists: nothing to add
