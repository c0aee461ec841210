"""The interruption and failure budgets, and telling a clear from a retry, without any server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.run.budgets import Budgets, first_try_of_cycle

BUDGETS = Budgets(auto_resume=True, max_interruptions=2, failure_retries=1)


def test_interruptions_within_the_budget_go_on_and_one_more_ends_the_run() -> None:
    assert BUDGETS.exhausted("interrupted", 2, interruptions=2, failures=0) is None
    assert BUDGETS.exhausted("interrupted", 3, interruptions=3, failures=0) == (
        "interruption budget exhausted: 3 interruptions > max_interruptions=2 (session 3 was interrupted)"
    )
    assert BUDGETS.exhausted("lost", 3, interruptions=3, failures=1, reason="heartbeat silent for 120 s") == (
        "interruption budget exhausted: 3 interruptions > max_interruptions=2 "
        "(session 3 was lost (heartbeat silent for 120 s))"
    )


def test_failures_are_budgeted_apart_from_interruptions() -> None:
    assert BUDGETS.exhausted("failed", 4, interruptions=2, failures=1, reason="exit code 3") is None
    message = BUDGETS.exhausted("failed", 5, interruptions=2, failures=2, reason="exit code 3", hint="fix it")
    assert message == "script failure budget exhausted: 2 failures > retries=1. Session 5: exit code 3. fix it"
    assert BUDGETS.exhausted("interrupted", 5, interruptions=1, failures=9) is None  # failures never stop a resume


def test_without_auto_resume_the_first_interruption_ends_the_run() -> None:
    budgets = Budgets(auto_resume=False, max_interruptions=5, failure_retries=0)
    assert budgets.exhausted("interrupted", 1, 1, 0) == "session 1 was interrupted and auto_resume is off"


@pytest.mark.parametrize("status", ["succeeded", "timeout"])
def test_other_ends_are_not_budget_questions(status: str) -> None:
    assert BUDGETS.exhausted(status, 9, interruptions=99, failures=99) is None


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "first"),
    [
        (1, 3, 3, True),  # the first try of a task with 3 retries
        (2, 3, 3, False),  # Airflow's retry
        (4, 3, 3, False),
        (5, 7, 3, True),  # cleared after try 4: max_tries = 4 + 3
        (6, 7, 3, False),
        (None, 3, 3, False),  # unknown: a retry, so a budget is never reset on a guess
        (2, None, 3, False),
    ],
)
def test_a_clear_is_told_from_a_retry_as_airflow_counts_tries(
    try_number: int | None, max_tries: int | None, retries: int, first: bool
) -> None:
    assert first_try_of_cycle(try_number, max_tries, retries) is first


def test_a_checkpoint_too_big_for_the_disk_ends_the_run_at_once_whatever_the_budget() -> None:
    """Not the script's failure, and every retry on the same disk would meet it again."""
    reason = "disk full while restoring: the disk filled up while restoring checkpoint 000001-000001.json"
    message = BUDGETS.exhausted(
        "failed", 2, interruptions=0, failures=1, reason=reason, hint="raise root_volume_gb", cause="disk_full"
    )
    assert message == f"session 2 could not restore: {reason}. raise root_volume_gb"
    assert BUDGETS.exhausted("failed", 2, interruptions=0, failures=1, reason="exit code 3") is None


def test_a_session_refused_by_a_live_lease_is_an_interruption_never_a_failure() -> None:
    """Agent exit 3 (the run's lease is held by a live session): the outcome says so, the run goes on with
    ``retries=0``, and the summary and budget messages name the holder instead of a spot notice."""
    from airflow_grid_resume.ledger.records import Outcome
    from airflow_grid_resume.run.ending import lease_refusal, session_status
    from airflow_grid_resume.run.summary import summarize, summary_lines

    reason = "lease held by session 3: nothing was run"
    outcome = Outcome(
        session=4, status="interrupted", clean=True, reason=reason, agent_exit_code=3, lease_held_by=3
    ).to_dict()
    assert lease_refusal(outcome) == "lease held by session 3"
    assert lease_refusal({**outcome, "agent_exit_code": 0}) is None  # a spot notice stays one
    assert session_status({"outcome": outcome}) == "interrupted"
    no_retries = Budgets(auto_resume=True, max_interruptions=1, failure_retries=0)
    assert no_retries.exhausted("interrupted", 4, interruptions=1, failures=0, reason=reason) is None
    assert no_retries.exhausted("interrupted", 5, interruptions=2, failures=0, reason=reason) == (
        "interruption budget exhausted: 2 interruptions > max_interruptions=1 "
        "(session 5 was interrupted (lease held by session 3))"
    )
    summary = summarize([{"session": 4, "outcome": outcome}])
    assert (summary["failures"], summary["interruptions"]) == (0, 1)
    lines = summary_lines(summary, run_uri="s3://b/run")
    assert "session 4: ran nothing (lease held by session 3)" in lines[1]
