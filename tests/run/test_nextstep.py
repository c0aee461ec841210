"""run/nextstep.py: what a try does next, from what the ledger and the state store say. Pure: no server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.run.nextstep import (
    Launch,
    Reattach,
    ReportSucceeded,
    Resume,
    RunView,
    StartFresh,
    choose_generation,
    next_step,
)


def test_a_run_that_never_ended_goes_on() -> None:
    assert choose_generation(None, None, None, "resume") == Resume()
    assert choose_generation(None, None, None, "fresh") == Resume()


def test_a_run_that_ended_is_reported_resumed_or_started_over_as_the_author_said() -> None:
    report = choose_generation("succeeded", 4, "succeeded", "resume")
    assert isinstance(report, ReportSucceeded) and report.session == 4 and "nothing to run" in report.note
    resumed = choose_generation("failed", 2, "script failure budget exhausted", "resume")
    assert isinstance(resumed, Resume) and "script failure budget exhausted" in (resumed.note or "")
    for status in ("succeeded", "failed"):
        assert isinstance(choose_generation(status, 3, None, "fresh"), StartFresh)


def test_the_first_try_launches_session_one() -> None:
    assert next_step(RunView(None, False, 0, False, False)) == Launch(1)


def test_an_open_session_is_reattached_never_launched_twice() -> None:
    view = RunView(2, False, 2, False, False, launched_instance="i-ledger", launched_at=10.0)
    assert next_step(view) == Reattach(2, "i-ledger", 10.0)
    # the state store knows the instance before launch.json was written (a try died in between)
    remembered = RunView(1, False, 2, False, False, remembered_instance="i-state", remembered_launched_at=20.0)
    assert next_step(remembered) == Reattach(2, "i-state", 20.0)
    # the state store wins over the ledger for the same session (it is written first)
    both = RunView(2, False, 2, False, False, "i-ledger", 10.0, "i-state", 20.0)
    assert next_step(both) == Reattach(2, "i-state", 20.0)


def test_an_open_session_without_any_instance_is_launched_under_its_own_number() -> None:
    """Its launches keep their ClientTokens, so one that EC2 did carry out is found, not doubled."""
    assert next_step(RunView(3, False, 3, False, False)) == Launch(3)


@pytest.mark.parametrize(
    ("has_outcome", "has_closed", "unwatched"),
    [(True, False, 2), (True, True, None), (False, True, None)],
)
def test_an_ended_session_is_closed_if_unwatched_judged_then_followed(has_outcome, has_closed, unwatched) -> None:
    step = next_step(RunView(2, False, 2, has_outcome, has_closed))
    assert step == Launch(3, close_unwatched=unwatched, judge=2)


def test_a_succeeded_session_is_reported_even_when_airflow_lost_its_result() -> None:
    step = next_step(RunView(5, True, 5, True, False))
    assert isinstance(step, ReportSucceeded) and step.session == 5


def test_a_final_json_saying_succeeded_is_believed_only_when_its_session_agrees() -> None:
    from airflow_grid_resume.run.nextstep import final_contradiction

    assert final_contradiction("succeeded", 3, "succeeded", None) is None
    assert final_contradiction("succeeded", 3, None, "succeeded") is None  # the Airflow side's verdict
    assert final_contradiction("failed", 3, None, None) is None  # only a success skips training
    forged = final_contradiction("succeeded", 7, None, None)
    assert forged is not None and "session 7" in forged and "not believed" in forged
    assert "interrupted" in (final_contradiction("succeeded", 2, "interrupted", None) or "")
