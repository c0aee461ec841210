"""The lifecycle's decisions, without any server: launch planning, liveness, the notice deadline, reaping."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta, timezone

import pytest

from airflow_grid_resume.agent.deadline import group_kill_at, group_returncode, plan_final_sync, seconds_until_reclaim
from airflow_grid_resume.ec2.launch import (
    CAPACITY,
    FATAL,
    ON_DEMAND,
    SPOT,
    THROTTLE,
    TRANSIENT,
    FallbackPolicy,
    Pair,
    classify_error,
)
from airflow_grid_resume.ledger.errors import crash_hint
from airflow_grid_resume.ledger.records import Heartbeat
from airflow_grid_resume.reaper import select_reapable
from airflow_grid_resume.spot.planner import END_ROUND, GIVE_UP, NEXT_PAIR, RETRY_SAME, Attempt, LaunchPlanner
from airflow_grid_resume.watch.liveness import ALIVE, BOOTING, GONE, NO_AGENT, SILENT, Liveness

PAIRS = [Pair("g5.xlarge", "subnet-a", "us-east-1a"), Pair("g5.xlarge", "subnet-b", "us-east-1b")]


@pytest.mark.parametrize(
    "code",
    ["InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable", "RequestTimeout", "ConnectionError"],
)
def test_transient_ec2_errors_are_retried_not_final(code: str) -> None:
    assert classify_error(code) == TRANSIENT


def planner(**kw) -> LaunchPlanner:
    return LaunchPlanner(PAIRS, run_uri="s3://b/run", session=3, **kw)


def test_a_launch_with_an_unknown_answer_is_retried_with_its_token_before_any_other_pair() -> None:
    p = planner()
    first = p.round(now=0.0, waited_seconds=0)[0]
    p.before(first)
    assert p.failed(first, TRANSIENT, now=1.0) == RETRY_SAME
    assert p.transient_delay() == 1.0
    for _ in range(3):
        assert p.failed(first, TRANSIENT, now=1.0) == RETRY_SAME
    assert p.failed(first, TRANSIENT, now=1.0) == END_ROUND  # still unknown: the round ends here...
    p.end_round()
    assert p.round(now=2.0, waited_seconds=2) == [first]  # ...and the next one starts with it, alone
    assert p.failures_in_a_row == 0  # an unknown answer is not a capacity failure


def test_a_replayed_attempt_comes_first_and_alone_with_the_same_token() -> None:
    recorded = planner().attempt(PAIRS[1], SPOT)
    restored = Attempt.from_dict(recorded.as_dict())
    p = planner(replay=restored)
    assert p.round(now=0.0, waited_seconds=0) == [recorded]
    p.before(recorded)
    assert p.failed(recorded, CAPACITY, now=0.0) == NEXT_PAIR  # a definitive answer: EC2 launched nothing
    p.end_round()
    assert [a.pair for a in p.round(now=1.0, waited_seconds=1)] == [PAIRS[0], PAIRS[1]]


def test_capacity_moves_on_throttling_ends_the_round_fatal_gives_up() -> None:
    p = planner(cool_down=300)
    attempts = p.round(now=0.0, waited_seconds=0)
    assert len(attempts) == 2 and attempts[0].token != attempts[1].token
    assert p.failed(attempts[0], CAPACITY, now=0.0) == NEXT_PAIR
    assert p.failed(attempts[1], THROTTLE, now=0.0) == END_ROUND
    p.end_round()
    assert p.failures_in_a_row == 0  # throttled rounds are not capacity failures
    assert [a.pair for a in p.round(now=1.0, waited_seconds=1)] == [PAIRS[1], PAIRS[0]]  # just-failed last
    assert p.failed(attempts[0], FATAL, now=1.0) == GIVE_UP


def test_the_same_attempt_has_the_same_token_everywhere() -> None:
    assert planner().attempt(PAIRS[0], SPOT) == planner().attempt(PAIRS[0], SPOT)
    assert planner().attempt(PAIRS[0], SPOT).token != planner().attempt(PAIRS[0], ON_DEMAND).token


def test_fallback_to_on_demand_after_capacity_failures() -> None:
    p = planner(policy=FallbackPolicy(after_capacity_failures=2))
    for t in range(2):
        for attempt in p.round(now=float(t), waited_seconds=t):
            p.failed(attempt, CAPACITY, now=float(t))
        p.end_round()
    assert {a.market for a in p.round(now=5.0, waited_seconds=5)} == {ON_DEMAND}


# -- liveness -----------------------------------------------------------------------------------------
def liveness(**kw) -> Liveness:
    args = dict(now=1000.0, launched_ago=0.0, heartbeat_timeout=90, boot_timeout=900, not_found_grace=120)
    return Liveness(**{**args, **kw})


def beat(seq: int, time: str = "t") -> Heartbeat:
    return Heartbeat(session=1, seq=seq, time=time)


def test_a_heartbeat_that_changes_is_alive_whatever_its_clock_says() -> None:
    live = liveness()
    for step in range(20):  # the agent's clock could be hours off: only changes count
        live.heartbeat(beat(step, f"1970-01-01T00:00:{step:02d}Z"), now=1000.0 + 10 * step)
        assert live.verdict(1000.0 + 10 * step).kind == ALIVE


def test_output_stands_in_for_heartbeat_reads_once_a_heartbeat_was_seen() -> None:
    live = liveness()  # timeout 90: a heartbeat read every 30 s
    assert live.next_heartbeat_read() == 1000.0
    live.heartbeat(None, now=1000.0)  # booting: no heartbeat yet, output does not postpone the next read
    live.output(1010.0)
    assert live.next_heartbeat_read() == 1030.0
    live.heartbeat(beat(1), now=1030.0)
    for t in range(1035, 1200, 5):  # output flows: no heartbeat read is due, the agent is alive
        live.output(float(t))
        assert live.next_heartbeat_read() == t + 30.0 and live.verdict(float(t)).kind == ALIVE
    # output stops and the agent with it: the same heartbeat, read from 30 s later on, is silence after 90 s
    for t in (1225.0, 1255.0, 1285.0):
        assert live.heartbeat_due(t)
        live.heartbeat(beat(1), now=t)
        assert live.verdict(t).kind == ALIVE
    live.heartbeat(beat(1), now=1315.0)
    assert live.verdict(1315.0).kind == SILENT


def test_an_agent_that_dies_when_its_output_stops_is_silent_within_the_bound() -> None:
    """While output flows the heartbeat is not read, but the agent keeps beating: the first read after
    the output stops always sees a beat it has not seen and counts from there. Silence still comes
    within heartbeat_timeout + 2/3 of it of the last output (docs/lifecycle.md), on a 2 s loop."""
    for stop in (1300.0, 1313.0, 1327.0, 1339.0):
        live = liveness()  # timeout 90
        now, silent = 1000.0, None
        while silent is None and now < 2000.0:
            if now < stop and int(now) % 4 == 0:
                live.output(now)
            if live.heartbeat_due(now):
                live.heartbeat(beat(int(min(now, stop) // 10)), now)  # a beat every 10 s until it dies
            if live.verdict(now).kind == SILENT:
                silent = now
            now += 2.0
        assert silent is not None and 90 < silent - stop <= 90 + 60, (stop, silent)


def test_silence_needs_the_same_heartbeat_read_over_more_than_the_timeout() -> None:
    live = liveness()
    live.heartbeat(beat(1), now=1000.0)
    assert live.verdict(now=1500.0).kind == ALIVE  # no read since: failed reads are no evidence
    live.heartbeat(beat(1), now=1060.0)
    assert live.verdict(now=1060.0).kind == ALIVE
    live.heartbeat(beat(1), now=1100.0)
    assert live.verdict(now=1100.0).kind == SILENT


def test_a_restarted_watch_gives_the_agent_a_full_timeout() -> None:
    live = liveness(launched_ago=5000.0)
    live.heartbeat(beat(77), now=1000.0)  # first sight of an old heartbeat: counted from now
    assert live.verdict(now=1080.0).kind == ALIVE


def test_gone_needs_positive_evidence() -> None:
    live = liveness(launched_ago=10.0)
    live.instance(None, now=1000.0)  # not listed: EC2's eventual consistency, just launched
    assert live.verdict(now=1100.0).kind == BOOTING
    live.instance(None, now=1200.0)
    assert live.verdict(now=1200.0).kind == GONE  # not listed for longer than the window
    live.instance({"State": {"Name": "running"}}, now=1201.0)
    assert live.verdict(now=1201.0).kind == BOOTING
    live.instance({"State": {"Name": "terminated"}, "StateReason": {"Code": "Server.SpotInstanceTermination"}}, 1202.0)
    verdict = live.verdict(now=1202.0)
    assert verdict.kind == GONE and verdict.state == "Server.SpotInstanceTermination"


def test_an_agent_that_never_beats_is_reported_after_the_boot_timeout() -> None:
    live = liveness(launched_ago=880.0)
    live.heartbeat(None, now=1000.0)
    assert live.verdict(now=1010.0).kind == BOOTING
    live.heartbeat(None, now=1030.0)
    assert live.verdict(now=1030.0).kind == NO_AGENT


# -- the notice deadline ------------------------------------------------------------------------------
def test_reclaim_time_survives_a_skewed_instance_clock() -> None:
    assert seconds_until_reclaim(notice_time=1120.0, now=1000.0, seen_ago=0.0) == 120.0
    # clock 10 min behind: the notice seems 12 min away; clock 10 min ahead: it seems past
    assert seconds_until_reclaim(notice_time=1120.0, now=400.0, seen_ago=3.0) == 117.0
    assert seconds_until_reclaim(notice_time=1120.0, now=1600.0, seen_ago=3.0) == 117.0
    assert seconds_until_reclaim(notice_time=1030.0, now=1000.0, seen_ago=90.0) == 30.0  # a late notice


def test_final_sync_reserve_comes_from_what_is_pending() -> None:
    small = plan_final_sync(
        pending_bytes=10_000_000, checkpoint_bytes=0, bytes_per_s=100e6, floor=10, seconds_left=118, min_grace=5
    )
    assert small.reserve == 10 and small.warnings == ()
    big = plan_final_sync(
        pending_bytes=20e9, checkpoint_bytes=0, bytes_per_s=100e6, floor=10, seconds_left=118, min_grace=5
    )
    assert big.reserve > 200 and any("more than a spot notice leaves" in w for w in big.warnings)
    late = plan_final_sync(pending_bytes=0, checkpoint_bytes=0, bytes_per_s=None, floor=10, seconds_left=8, min_grace=5)
    assert any(w.startswith("late notice") for w in late.warnings)


def test_an_older_backlog_does_not_take_the_commands_time_to_save() -> None:
    """8 GB changed since the last sync (older checkpoints the new one supersedes) must not leave the command
    --min-grace: the reserve is for its own 1 GB save, and the backlog is only warned about."""
    plan = plan_final_sync(
        pending_bytes=8e9, checkpoint_bytes=1e9, bytes_per_s=100e6, floor=10, seconds_left=118, min_grace=5
    )
    assert plan.reserve == 17.0  # 1.5 x 10 s for the new checkpoint, plus 2 s
    assert [w for w in plan.warnings if "8000 MB changed since the last sync" in w and "keeps its time" in w]
    calm = plan_final_sync(
        pending_bytes=1e9, checkpoint_bytes=1e9, bytes_per_s=100e6, floor=10, seconds_left=118, min_grace=5
    )
    assert calm.reserve == 17.0 and calm.warnings == ()  # both fit: nothing to say


def test_the_group_keeps_the_notices_time_after_its_leader_exits() -> None:
    # bash died of the SIGTERM at t=100; the notice left the command until t=150: the trainer keeps it
    assert group_kill_at(kill_at=150.0, leader_exited_at=100.0, min_grace=5.0) == 150.0
    # a deadline already (nearly) past still leaves --min-grace after the leader's exit
    assert group_kill_at(kill_at=101.0, leader_exited_at=100.0, min_grace=5.0) == 105.0


def test_a_shell_killed_by_the_sigterm_is_judged_by_the_trainer_it_ran() -> None:
    assert group_returncode(leader=-15, rest=[0]) == 0  # bash died at once, the trainer saved and exited 0
    assert group_returncode(leader=-15, rest=[1, 0]) == 1  # the trainer failed, tee (trap '' TERM) ended well
    assert group_returncode(leader=-15, rest=[-15, 1]) == 1  # tee died of it, the trainer's print got EPIPE
    assert group_returncode(leader=-15, rest=[]) == -15  # nothing else ran
    assert group_returncode(leader=0, rest=[-15]) == 0  # a leader that exited by itself speaks for the command


def test_crash_hints_say_what_to_fix() -> None:
    assert "root_volume_gb" in crash_hint(OSError(errno.ENOSPC, "No space left on device"))
    assert "bug" in crash_hint(KeyError("x"))


# -- the reaper ---------------------------------------------------------------------------------------
def instance(instance_id: str, tags: dict[str, str], state: str = "running") -> dict:
    return {
        "InstanceId": instance_id,
        "State": {"Name": state},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def test_the_reaper_takes_expired_or_ended_tagged_instances_only() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    past, future = (now - timedelta(hours=1)), (now + timedelta(hours=1))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    run = {"grid-resume:run-id": "s3://b/r", "grid-resume:session": "2"}
    instances = [
        instance("i-expired", {**run, "grid-resume:expires-at": past.strftime(fmt)}),
        instance("i-live", {**run, "grid-resume:session": "3", "grid-resume:expires-at": future.strftime(fmt)}),
        instance("i-ended", {**run, "grid-resume:expires-at": future.strftime(fmt)}),
        instance("i-theirs", {"Name": "not ours", "grid-resume:expires-at": past.strftime(fmt)}),
        instance("i-gone", {**run, "grid-resume:expires-at": past.strftime(fmt)}, state="terminated"),
        instance("i-untagged-expiry", {**run, "grid-resume:session": "9"}),
    ]
    reap, notes = select_reapable(instances, now, lambda run_uri: 2 if run_uri == "s3://b/r" else None)
    assert {r.instance_id: r.reason.split()[0] for r in reap} == {"i-expired": "expired", "i-ended": "its"}
    assert len(notes) == 1 and "i-untagged-expiry" in notes[0]


def test_a_lease_whose_holder_ended_is_taken_over_and_a_live_one_never() -> None:
    """The next session takes over a lease left by a session that wrote its outcome (its instance was
    reclaimed before it released the lease), was released (the Airflow side saw the instance gone) or
    stopped renewing past its TTL; a live holder is refused."""
    import dataclasses

    from airflow_grid_resume.agent.lease import takeover_reason
    from airflow_grid_resume.ledger.records import Lease
    from airflow_grid_resume.run.ending import lease_holder_elsewhere

    live = Lease(agent_id="a", session=1, renewed_at=900.0, expires_at=1200.0)
    assert takeover_reason(live, 1000.0, holder_ended=False) is None
    assert takeover_reason(live, 1000.0, holder_ended=True) == (
        "session 1 has ended (its outcome is written) without releasing it"
    )
    assert takeover_reason(live, 1260.0, holder_ended=False) == "expired 60 s ago (its renewals stopped)"
    gone = dataclasses.replace(live, released=True, released_by="airflow: instance i-1 is gone")
    assert takeover_reason(gone, 1000.0, holder_ended=False) == "released (airflow: instance i-1 is gone)"
    assert takeover_reason(None, 1000.0, holder_ended=False) == "no readable lease"
    unclaimed = dataclasses.replace(live, session=None)  # the holder never claimed a session: only expiry frees it
    assert takeover_reason(unclaimed, 1000.0, holder_ended=True) is None
    # The watch of session 2, which powered off without starting: held by live session 1, not a boot failure.
    assert lease_holder_elsewhere(live, 2, 1000.0) == 1
    assert lease_holder_elsewhere(live, 1, 1000.0) is None
    assert lease_holder_elsewhere(live, 2, 1300.0) is None
    assert lease_holder_elsewhere(gone, 2, 1000.0) is None
    assert lease_holder_elsewhere(None, 2, 1000.0) is None
