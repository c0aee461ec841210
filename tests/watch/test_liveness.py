"""watch/liveness.py: is a session's instance alive, gone, or unknown. Pure: no server."""

from __future__ import annotations

from airflow_grid_resume.ledger.records import Heartbeat
from airflow_grid_resume.watch.liveness import ALIVE, BOOTING, GONE, NO_AGENT, SILENT, Liveness


# -- liveness -----------------------------------------------------------------------------------------
def liveness(**kw) -> Liveness:
    args = dict(now=1000.0, launched_ago=0.0, heartbeat_timeout=90, boot_timeout=900, not_found_grace=120)
    return Liveness(**{**args, **kw})


def beat(seq: int, time: str = "t") -> Heartbeat:
    return Heartbeat(session=1, seq=seq, time=time)


# -- the reaper ---------------------------------------------------------------------------------------
def instance(instance_id: str, tags: dict[str, str], state: str = "running") -> dict:
    return {
        "InstanceId": instance_id,
        "State": {"Name": state},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


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
