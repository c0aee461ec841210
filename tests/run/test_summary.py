"""Pure pieces of the operator side: the run summary and cost, the wait log, the retry policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_grid_resume.ec2.prices import on_demand_price
from airflow_grid_resume.operators import generation_uri
from airflow_grid_resume.retry import InterruptionRetryPolicy, ScriptFailed, SessionInterrupted
from airflow_grid_resume.run.ending import session_status
from airflow_grid_resume.run.summary import session_seconds, summarize, summary_lines
from airflow_grid_resume.triggers.capacity import WaitLog
from tests.conftest import OPERATOR_ARGS


def launch(at: float, market: str = "spot", spot: float | None = 0.30, od: float | None = 1.006) -> dict:
    return {
        "instance_id": f"i-{int(at)}",
        "instance_type": "g5.xlarge",
        "zone": "us-east-1a",
        "lifecycle": market,
        "spot_price": spot,
        "on_demand_price": od,
        "launched_at": at,
    }


def test_summary_counts_sessions_seconds_and_cost_from_the_records() -> None:
    records = [
        # interrupted after an hour (agent outcome, ISO end time)
        {"session": 1, "launch": launch(0), "outcome": {"status": "interrupted", "ended_at": "1970-01-01T01:00:00Z"}},
        # lost: no outcome, the Airflow side's verdict 30 min later
        {"session": 2, "launch": launch(4000), "outcome": None, "closed": {"status": "lost", "at": 5800}},
        # on-demand fallback, succeeded after 2 h
        {
            "session": 3,
            "launch": launch(6000, "on-demand", spot=None),
            "outcome": {"status": "succeeded", "ended_at": 13200.0},
        },
    ]
    summary = summarize(records)
    assert (summary["sessions"], summary["interruptions"], summary["failures"]) == (3, 2, 0)
    assert summary["spot_seconds"] == 3600 + 1800
    assert summary["on_demand_seconds"] == 7200
    assert summary["estimated_cost_usd"] == pytest.approx(0.30 * 1.5 + 1.006 * 2, abs=1e-3)
    assert summary["on_demand_cost_usd"] == pytest.approx(1.006 * 3.5, abs=1e-3)
    assert summary["final_outcome"] == "succeeded"
    assert [s["status"] for s in summary["session_details"]] == ["interrupted", "lost", "succeeded"]


def test_unknown_prices_make_the_cost_unknown_not_zero() -> None:
    records = [{"session": 1, "launch": launch(0, od=None), "outcome": {"status": "succeeded", "ended_at": 60.0}}]
    summary = summarize(records)
    assert summary["estimated_cost_usd"] is None and summary["on_demand_cost_usd"] is None
    assert summary["spot_seconds"] == 60


def test_a_session_without_records_is_lost_and_costs_no_seconds() -> None:
    assert session_status({"session": 4}) == "lost"
    assert session_seconds({"session": 4}) == 0.0
    assert session_status({"outcome": {"status": "failed"}, "closed": {"status": "failed"}}) == "failed"


def test_on_demand_price_table_and_overrides() -> None:
    assert on_demand_price("g5.xlarge") == pytest.approx(1.006)
    assert on_demand_price("g5.xlarge", {"g5.xlarge": 1.5}) == 1.5
    assert on_demand_price("x9.huge") is None and on_demand_price(None) is None


def test_wait_log_keeps_the_first_and_latest_rounds() -> None:
    log = WaitLog(keep=6)
    for i in range(100):
        log.append(f"round {i}")
    lines = log.lines()
    assert lines[:3] == ["round 0", "round 1", "round 2"]
    assert lines[3] == "... 94 more rounds ..."
    assert lines[4:] == ["round 97", "round 98", "round 99"]
    short = WaitLog(keep=6)
    short.append("only")
    assert short.lines() == ["only"]


def test_interruptions_retry_promptly_and_failures_defer_to_the_user() -> None:
    class Fail:
        def evaluate(self, exception, try_number, max_tries, context=None):
            from airflow.sdk import RetryDecision

            return RetryDecision.fail("user policy")

    policy = InterruptionRetryPolicy(timedelta(seconds=0), inner=None)
    decision = policy.evaluate(SessionInterrupted("session 2 was interrupted"), 2, 10)
    assert decision.action.value == "retry" and decision.retry_delay == timedelta(0)
    assert "spot interruption" in decision.reason
    assert policy.evaluate(ScriptFailed("exit 3"), 2, 10).action.value == "default"
    wrapped = InterruptionRetryPolicy(timedelta(seconds=5), inner=Fail())
    assert wrapped.evaluate(ScriptFailed("exit 3"), 2, 10).action.value == "fail"
    assert wrapped.evaluate(SessionInterrupted("x"), 2, 10).retry_delay == timedelta(seconds=5)


def test_operator_wraps_the_users_retry_policy_and_validates_new_parameters() -> None:
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    from airflow_grid_resume.operators import GridRunOperator

    base = OPERATOR_ARGS
    user = ExceptionRetryPolicy(rules=[RetryRule(exception=KeyError, action=RetryAction.FAIL)])
    op = GridRunOperator(**base, retries=2, max_interruptions=5, retry_policy=user)
    assert isinstance(op.retry_policy, InterruptionRetryPolicy) and op.retry_policy.inner is user
    assert op.retries == 7 and op.failure_retries == 2
    for change, name in [
        ({"rerun": "again"}, "rerun"),
        ({"interruption_retry_delay": -1}, "interruption_retry_delay"),
        ({"on_demand_prices": {"g5.xlarge": "cheap"}}, "on_demand_prices"),
    ]:
        with pytest.raises(ValueError, match=name):
            GridRunOperator(**{**base, **change})


def test_generation_uris_nest_under_the_first_run() -> None:
    assert generation_uri("s3://b/runs/d/t/r", 1) == "s3://b/runs/d/t/r"
    assert generation_uri("s3://b/runs/d/t/r", 3) == "s3://b/runs/d/t/r/rerun-3"


def test_mapped_tasks_get_the_interruption_budget_too() -> None:
    """The scheduler reads a mapped task's retries from partial(), before any __init__ runs."""
    from datetime import datetime, timezone

    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_grid_resume.operators import GridRunOperator

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with DAG("mapped", schedule=None, start_date=start, default_args={"retries": 3}):
        mapped = GridRunOperator.partial(
            task_id="train",
            artifacts_uri="s3://b/runs",
            instance_types=["g5.xlarge"],
            image_id="ami-1",
            subnet_ids=["subnet-1"],
            max_interruptions=5,
        ).expand(command=["python a.py", "python b.py"])
    assert mapped.retries == 8  # 3 for script failures (from default_args) + 5 interruptions
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(mapped.dag))
    assert serialized.get_task("train").retries == 8  # what the scheduler sets max_tries from
    task = mapped.unmap({"command": "python a.py", "params": {}})
    assert (task.retries, task.failure_retries) == (8, 3)  # not added twice on the worker
    assert isinstance(task.retry_policy, InterruptionRetryPolicy)


def test_trigger_events_wait_until_the_deferral_has_settled() -> None:
    from airflow_grid_resume.watch.settle import SETTLE_SECONDS, settle_delay

    assert settle_delay(None, 100.0) == 0.0  # not deferred by the operator (direct use): no wait
    assert settle_delay(100.0, 101.0) == SETTLE_SECONDS - 1.0  # fired a second after deferring
    assert settle_delay(100.0, 100.0 + SETTLE_SECONDS + 5) == 0.0  # long after: at once
    assert settle_delay(100.0, 50.0) == SETTLE_SECONDS  # a clock that went back never waits longer


def test_steps_lost_per_interruption_come_from_the_progress_protocol() -> None:
    def session(n: int, status: str, first: int | None, last: int | None) -> dict:
        progress = {"first": first, "last": last, "total": 100} if first is not None else None
        return {"session": n, "outcome": {"status": status, **({"progress": progress} if progress else {})}}

    summary = summarize(
        [session(1, "interrupted", 1, 40), session(2, "interrupted", 37, 70), session(3, "succeeded", 71, 100)]
    )
    assert [d["steps_lost"] for d in summary["session_details"]] == [4, 0, None]  # 37-40 redone, then none
    assert summary["steps_lost"] == 4
    quiet = summarize([session(1, "interrupted", None, None), session(2, "succeeded", None, None)])
    assert quiet["steps_lost"] is None and quiet["session_details"][0]["steps_lost"] is None
    assert not summary["steps_lost_at_least"]


def test_what_ended_a_session_typed_and_in_json_form_agree() -> None:
    from airflow_grid_resume.ledger.records import Closed, Outcome
    from airflow_grid_resume.run.ending import ended_status, session_status

    cases = [
        (Outcome(session=1, status="failed"), Closed(status="interrupted")),
        (None, Closed(status="interrupted")),
        (None, Closed()),
        (None, None),
    ]
    for outcome, closed in cases:
        as_json = {"outcome": outcome.to_dict() if outcome else None, "closed": closed.to_dict() if closed else None}
        assert ended_status(outcome, closed) == session_status(as_json)
    assert [ended_status(o, c) for o, c in cases] == ["failed", "interrupted", "lost", "lost"]


def test_steps_lost_by_sessions_lost_without_an_outcome_come_from_their_heartbeats() -> None:
    # session 1 lost (no outcome): its last heartbeat said 40 (up to one interval old); session 2 lost
    # too, its heartbeat says it resumed at 37 and reached 55; session 3 resumed at 51
    lost1 = {"session": 1, "closed": {"status": "lost"}, "heartbeat": {"progress": {"done": 40, "first": 1}}}
    lost2 = {"session": 2, "closed": {"status": "lost"}, "heartbeat": {"progress": {"done": 55, "first": 37}}}
    third = {"session": 3, "outcome": {"status": "succeeded", "progress": {"first": 51, "last": 100}}}
    summary = summarize([lost1, lost2, third])
    details = summary["session_details"]
    assert [(d["steps_lost"], d["steps_lost_at_least"]) for d in details] == [(4, True), (5, True), (None, False)]
    assert summary["steps_lost"] == 9 and summary["steps_lost_at_least"]
    text = "\n".join(summary_lines(summary, run_uri="s3://b/r"))
    assert "at least 4 steps redone after it" in text and "at least 5 steps redone after it" in text
    # an old agent's heartbeat has no first: the loss before a lost session stays unknown, never guessed
    old = summarize([lost1, {**lost2, "heartbeat": {"progress": {"done": 55}}}, third])
    assert [d["steps_lost"] for d in old["session_details"]] == [None, 5, None]


def test_a_deadline_run_summary_says_whether_it_met_the_deadline_and_what_the_policy_decided() -> None:
    t0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    decision = {"action": "spot", "pool": "us-east-1a", "reason": "spot in us-east-1a: 1.0 h of slack", "at": t0}
    records = [
        {
            "session": 1,
            "launch": {"launched_at": t0, "lifecycle": "spot", "spot_price": 0.3, "on_demand_price": 1.0},
            "outcome": {"status": "succeeded", "ended_at": t0 + 3 * 3600},
            "decision": {**decision, "deadline_at": t0 + 4 * 3600, "ahead_hours": 0.0},
        }
    ]
    deadline = {"deadline_at": t0 + 4 * 3600, "expected_hours": 3.0, "first_started_at": t0}
    summary = summarize(records, final_outcome="succeeded", deadline=deadline)
    assert summary["deadline"]["met"] is True and summary["deadline"]["finished_at"] == t0 + 3 * 3600
    lines = summary_lines({**summary, "last_manifest": None}, run_uri="s3://b/r")
    assert "  deadline 04:00 UTC, met: finished 03:00 UTC" in lines
    assert "    session 1, policy: spot in us-east-1a: 1.0 h of slack; 0.00 h ahead of the line to 04:00" in lines
    assert "deadline" not in summarize(records, final_outcome="succeeded")  # without deadline= nothing changes
