"""run/verdict.py: what the try that watched a session does once it ended. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.ledger.records import Outcome
from airflow_grid_resume.run.budgets import Budgets
from airflow_grid_resume.run.ending import ended_by
from airflow_grid_resume.run.verdict import (
    FAIL_RUN,
    NEXT_SESSION,
    REPORT,
    RETRY_FAILED,
    RETRY_INTERRUPTED,
    session_verdict,
    spends_budget,
)

BUDGETS = Budgets(auto_resume=True, max_interruptions=2, failure_retries=1)


def verdict(status: str, outcome: dict | None = None, *, interruptions: int = 0, failures: int = 0, reason=None):
    return session_verdict(
        status,
        3,
        outcome,
        closed_reason=reason,
        interruptions=interruptions,
        failures=failures,
        budgets=BUDGETS,
        max_run=3600.0,
    )


def test_a_success_is_reported_and_a_timeout_fails_the_run() -> None:
    assert verdict("succeeded").action == REPORT
    timeout = verdict("timeout")
    assert timeout.action == FAIL_RUN and timeout.message.startswith("max_run (3600 s) reached in session 3")


def test_an_interruption_says_what_ended_it_in_the_run_views_words() -> None:
    notice = Outcome(session=3, status="interrupted", clean=True, notice={"source": "imds"}).to_dict()
    assert verdict("interrupted", notice, interruptions=1).action == RETRY_INTERRUPTED
    assert verdict("interrupted", notice, interruptions=1).message == "spot interruption notice"
    lost = verdict("lost", None, interruptions=1, reason="instance i-1 is terminated")
    assert (lost.action, lost.message) == (
        RETRY_INTERRUPTED,
        "instance lost without notice (instance i-1 is terminated)",
    )
    held = Outcome(session=3, status="interrupted", agent_exit_code=3, lease_held_by=2).to_dict()
    message = verdict("interrupted", held, interruptions=1).message
    assert message.startswith("ran nothing (lease held by session 2)") and "takes over" in message


def test_a_spent_budget_fails_the_run_and_a_failure_keeps_the_scripts_last_lines() -> None:
    assert verdict("lost", interruptions=3, reason="x").action == FAIL_RUN
    failed = Outcome(session=3, status="failed", exit_code=1, reason="exit code 1", tail=["Traceback", "KeyError"])
    within = verdict("failed", failed.to_dict(), failures=1)
    assert within.action == RETRY_FAILED and within.message == "session 3 failed: exit code 1.\nTraceback\nKeyError"
    spent = verdict("failed", failed.to_dict(), failures=2)
    assert spent.action == FAIL_RUN and spent.message.endswith("Traceback\nKeyError")
    assert "script failure budget exhausted: 2 failures > retries=1" in spent.message


def test_only_endings_that_spend_a_budget_need_the_counts() -> None:
    from airflow_grid_resume.run.verdict import spends_budget

    assert [spends_budget(s) for s in ("succeeded", "timeout", "interrupted", "lost", "failed")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_a_planned_stop_launches_the_next_session_and_spends_no_budget() -> None:
    outcome = {"status": "stopped", "notice": {"source": "planned"}, "reason": "stopped"}
    verdict = session_verdict(
        "stopped",
        4,
        outcome,
        closed_reason=None,
        interruptions=0,
        failures=0,
        budgets=Budgets(auto_resume=False, max_interruptions=0, failure_retries=0),  # no budget at all
        max_run=None,
    )
    assert verdict.action == NEXT_SESSION and "planned stop" in verdict.message
    assert not spends_budget("stopped")
    assert ended_by({"outcome": outcome}).startswith("planned stop: the deadline policy went back to spot")
