"""agent/deadline.py: the notice deadline, the group's time, the final sync's reserve. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.agent.deadline import group_kill_at, group_returncode, plan_final_sync, seconds_until_reclaim


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
