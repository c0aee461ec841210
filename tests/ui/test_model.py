"""The UI plugin's view models and pages from ledger documents: pure, no server."""

from __future__ import annotations

import time

from airflow_grid_resume.ui import model, render

T0 = 1_800_000_000.0


def _docs(*, running: bool = False) -> dict:
    """Three sessions: a spot notice, a lost instance, then success (or still running)."""
    launch = {
        "instance_type": "g5.xlarge",
        "zone": "us-east-1a",
        "lifecycle": "spot",
        "spot_price": 0.3,
        "on_demand_price": 1.0,
    }
    sessions = [
        {
            "session": 1,
            "launch": {**launch, "instance_id": "i-1", "launched_at": T0 + 20, "waited_seconds": 20},
            "outcome": {
                "status": "interrupted",
                "notice": {"source": "imds", "time": "2027-01-15T08:01:00Z"},
                "ended_at": T0 + 120,
                "progress": {"first": 1, "last": 120, "total": 400},
            },
            "closed": {"status": "interrupted", "at": T0 + 121},
        },
        {
            "session": 2,
            "launch": {**launch, "instance_id": "i-2", "zone": "us-east-1b", "launched_at": T0 + 130},
            "heartbeat": {"epoch": T0 + 200, "state": "running", "progress": {"done": 260, "total": 400}},
            "outcome": None,
            "closed": {"status": "lost", "reason": "instance i-2 is terminated with no outcome", "at": T0 + 210},
        },
        {
            "session": 3,
            "launch": {**launch, "instance_id": "i-3", "launched_at": T0 + 220},
            "heartbeat": {"epoch": T0 + 300, "state": "running", "progress": {"done": 300, "total": 400, "first": 241}},
            "outcome": None
            if running
            else {
                "status": "succeeded",
                "exit_code": 0,
                "ended_at": T0 + 400,
                "progress": {"first": 241, "last": 400, "total": 400},
            },
            "closed": None if running else {"status": "succeeded", "at": T0 + 401},
        },
    ]
    return {
        "run_uri": "s3://bucket/grid-runs/dag/train/run1",
        "spec": {"budgets": {"max_interruptions": 2, "failure_retries": 1}},
        "final": None if running else {"status": "succeeded", "session": 3},
        "sessions": sessions,
        "manifests": [
            {"name": "000003-000002.json", "session": 3, "seq": 2, "committed_at": T0 + 390, "bytes": 2048, "files": 2},
            {"name": "000001-000003.json", "session": 1, "seq": 3, "committed_at": T0 + 119, "bytes": 1024, "files": 2},
            {"name": "000000-000001.json", "session": 0, "seq": 1, "committed_at": T0 + 1, "bytes": 10, "files": 1},
        ],
    }


TRIES = [
    {"try_number": 1, "state": "up_for_retry", "start_date": T0, "end_date": T0 + 122},
    {"try_number": 2, "state": "up_for_retry", "start_date": T0 + 125, "end_date": T0 + 212},
    {"try_number": 3, "state": "success", "start_date": T0 + 215, "end_date": T0 + 402},
]


def test_one_row_per_try_says_what_ended_it() -> None:
    view = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    tries = view["tries"]
    assert [t["sessions"] for t in tries] == [[1], [2], [3]]
    assert tries[0]["ended_by"] == "spot interruption notice" and tries[0]["kind"] == "interruption"
    assert tries[1]["ended_by"].startswith("instance lost without notice (instance i-2 is terminated")
    assert tries[2]["ended_by"] == "succeeded" and tries[2]["instance_id"] == "i-3"
    assert view["state"] == {**view["state"], "phase": "succeeded", "text": "succeeded in session 3"}


def test_steps_lost_cost_budgets_and_checkpoints() -> None:
    view = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    by_session = {s["session"]: s for s in view["sessions"]}
    # session 2 was lost: no outcome says where it started, and its (old-style) heartbeat names only the latest step
    assert by_session[1]["steps_lost"] is None
    # reached at least 260 (its last heartbeat, up to one interval old), session 3 resumed at 241
    assert by_session[2]["steps_lost"] == 20 and by_session[2]["steps_lost_at_least"]
    assert by_session[2]["progress_last"] == 260 and by_session[2]["progress_last_at_least"]
    assert by_session[3]["steps_lost"] is None
    assert view["steps_lost"] == 20 and view["steps_lost_at_least"]
    html = render.run_page(view, title="t", now=T0 + 500)
    assert "at least 20 steps redone after interruptions" in html
    assert "at least 20</span>" in html and "last heartbeat&#x27;s step" in html and "≥ 260" in html
    assert by_session[2]["zone"] == "us-east-1b" and by_session[2]["price_per_hour"] == 0.3
    # 101 + 80 + 181 s at 0.3 USD/h against 1.0 USD/h
    assert abs(view["cost"]["spot_usd"] - 0.3 * 362 / 3600) < 1e-3
    assert abs(view["cost"]["on_demand_usd"] - 362 / 3600) < 1e-3
    assert view["cost"]["saved_percent"] == 70
    assert view["budgets"]["interruptions_used"] == 2 and view["budgets"]["interruptions_left"] == 0
    assert view["budgets"]["failures_left"] == 1
    assert view["checkpoints"][0]["uri"] == "s3://bucket/grid-runs/dag/train/run1/manifests/000003-000002.json"
    assert view["capacity_waited_seconds"] == 20
    docs = _docs()
    docs["sessions"][1]["heartbeat"]["progress"]["first"] = 111  # a heartbeat that also names the first step
    resumed = {s["session"]: s["steps_lost"] for s in model.run_view(docs, TRIES, now=T0 + 500)["sessions"]}
    assert resumed[1] == 10  # reached 120 (its outcome: exact), resumed after 110 (the lost session's first)
    both_lost = _docs()  # session 1 lost too: its last heartbeat and session 2's give "at least" 10
    both_lost["sessions"][0].update(outcome=None, heartbeat={"epoch": T0 + 110, "progress": {"done": 120, "first": 1}})
    both_lost["sessions"][0]["closed"] = {"status": "lost", "reason": "no heartbeat", "at": T0 + 121}
    both_lost["sessions"][1]["heartbeat"]["progress"]["first"] = 111
    lost = {s["session"]: s for s in model.run_view(both_lost, TRIES, now=T0 + 500)["sessions"]}
    assert (lost[1]["steps_lost"], lost[1]["steps_lost_at_least"]) == (10, True)
    assert lost[1]["ended_by"].startswith("instance lost without notice")
    kinds = [e["kind"] for e in view["timeline"]]
    assert kinds.count("session") == 3 and "notice" in kinds and "lost" in kinds and "checkpoint" in kinds


def test_live_state_while_running_with_progress_and_eta() -> None:
    tries = [*TRIES[:2], {"try_number": 3, "state": "deferred", "start_date": T0 + 215, "end_date": None}]
    view = model.run_view(_docs(running=True), tries, now=T0 + 303, ti_state="deferred")
    state = view["state"]
    assert state["phase"] == "running"
    assert state["text"] == "running on g5.xlarge in us-east-1a, heartbeat 3 s ago, step 300 of 400"
    # 59 steps in 80 s since the session started at step 241: 100 to go
    assert round(state["eta_seconds"]) == round(100 * 80 / 59)
    assert view["tries"][2]["ended_by"] == "running"
    assert view["sessions"][2]["seconds"] == 83.0  # counted until now
    html = render.run_page(view, title="t", now=T0 + 303)
    assert 'id="live"' in html or "id='live'" in html
    assert "step 300 of 400 (75 %)" in html


def test_waiting_for_capacity_says_for_what() -> None:
    docs = {"run_uri": "s3://b/r", "sessions": [], "manifests": [], "spec": None, "final": None}
    waiting = {"instance_types": ["g5.xlarge", "g4dn.xlarge"], "started_at": T0, "max_wait": 600}
    deferred = [{"try_number": 1, "state": "deferred", "start_date": T0}]

    def state(record: dict | None, *, now: float = T0 + 40, seen: dict | None = None) -> dict:
        docs["sessions"] = [{"session": 1, "attempt": record, "attempt_seen": seen}] if record else []
        return model.run_view(docs, deferred, now=now, ti_state="deferred", waiting=waiting)["state"]

    assert state(None)["text"] == "waiting for spot capacity: g5.xlarge, g4dn.xlarge; waited 40 s of at most 600 s"
    # before each attempt the capacity trigger records it (sessions/N/launch-attempt.json, phase "trying")
    trying = {
        "at": T0 + 28,
        "phase": "trying",
        "attempt": {"instance_type": "g4dn.xlarge", "zone": "us-east-1b", "lifecycle": "spot", "token": "t"},
    }
    assert state(trying)["text"] == (
        "waiting for spot capacity: g5.xlarge, g4dn.xlarge; trying g4dn.xlarge spot in us-east-1b (since 12 s); "
        "waited 40 s of at most 600 s"
    )
    # a round that found nothing: EC2's answers and the next round's delay, one PUT
    answers = [
        {
            "instance_type": "g5.xlarge",
            "zone": "us-east-1a",
            "lifecycle": "spot",
            "code": "InsufficientInstanceCapacity",
            "kind": "capacity",
            "message": "We currently do not have sufficient g5.xlarge capacity",
        },
        {
            "instance_type": "g4dn.xlarge",
            "zone": "us-east-1a",
            "lifecycle": "spot",
            "code": "SpotMaxPriceTooLow",
            "kind": "capacity",
            "message": "Your Spot request price of 0.1 is lower than the minimum",
        },
    ]
    backing_off = {
        **trying,
        "phase": "backing-off",
        "answers": answers,
        "next_try_in": 55.0,
        "rounds": 3,
        "lifecycle": "spot",
        "at": T0 + 30,
    }
    # written 15 s ago by S3's clock (Date - Last-Modified), read 1 s before now: 55 - 15 - 1 = 39 s left,
    # whatever the triggerer's clock said in "at" (here 10 s slow: it claims T0 + 30, S3 says T0 + 24)
    wait = state(backing_off, seen={"age": 15.0, "read_at": T0 + 39})
    assert wait["text"] == (
        "waiting for spot capacity: g5.xlarge or g4dn.xlarge in us-east-1a, next try in 39 s; "
        "EC2 answered InsufficientInstanceCapacity (no capacity for it there now); SpotMaxPriceTooLow (the spot "
        "price is above the max price); waited 40 s of at most 600 s (3 rounds)"
    )
    assert wait["countdown"] == {"text": "next try in 39 s", "seconds": 39}
    assert [a["answer"].split(" ")[0] for a in wait["wait"]["answers"]] == [
        "InsufficientInstanceCapacity",
        "SpotMaxPriceTooLow",
    ]
    # without S3's age the writer's own "at" is all there is: 30 + 55 - 40 = 45 s
    assert state(backing_off, seen={"age": None, "read_at": T0 + 40})["countdown"]["seconds"] == 45
    # the next round is due: "now"; long overdue: the triggerer may be down
    assert ", next try now;" in state(backing_off, now=T0 + 90)["text"]
    late = state(backing_off, now=T0 + 200)
    assert "next try overdue by 115 s (is the triggerer running?)" in late["text"] and late["countdown"] is None
    view = model.run_view(docs, deferred, now=T0 + 40, ti_state="deferred", waiting=waiting)
    assert view["sessions"] == [] and "token" not in str(view)  # a planned session is no session; no token shown
    assert view["tries"][0]["ended_by"] == "waiting for capacity"
    assert view["cost"]["spot_usd"] is None
    assert view["capacity_waited_seconds"] == 40  # the wait going on counts before it ends
    assert model._pairs_text([("a", "z1"), ("b", "z2")]) == "a in z1, b in z2"  # not every type in every zone
    docs["sessions"] = [{"session": 1, "attempt": backing_off, "attempt_seen": {"age": 15.0, "read_at": T0 + 39}}]
    html = render.run_page(
        model.run_view(docs, deferred, now=T0 + 40, ti_state="deferred", waiting=waiting), title="t", now=T0 + 40
    )
    # the page counts the seconds down itself (its own clock, from when it got the number)
    assert 'next try in <span data-countdown="39">39 s</span>' in html
    assert "We currently do not have sufficient g5.xlarge capacity" in html  # EC2's own words, per pair
    assert "no cost yet: no instance launched" in html


def test_airflow_retry_pending_says_when() -> None:
    docs = _docs(running=True)
    docs["sessions"][2].update(outcome={"status": "interrupted", "ended_at": T0 + 310}, heartbeat=None)
    tries = [*TRIES[:2], {"try_number": 3, "state": "up_for_retry", "start_date": T0 + 215, "end_date": T0 + 311}]
    state = model.run_view(docs, tries, now=T0 + 320, ti_state="up_for_retry", retry_at=T0 + 341)["state"]
    when = time.strftime("%H:%M:%S UTC", time.gmtime(T0 + 341))
    assert state["text"] == f"Airflow retry pending: next try at {when} (in 21 s); it resumes from the last checkpoint"
    assert state["countdown"] == {"text": "in 21 s", "seconds": 21} and state["phase"] == "waiting"
    unknown = model.run_view(docs, tries, now=T0 + 320, ti_state="up_for_retry")["state"]
    assert unknown["text"] == "Airflow retry pending; it resumes from the last checkpoint"


def test_failure_is_a_script_failure_with_its_exit_code() -> None:
    docs = _docs()
    docs["sessions"][2]["outcome"] = {"status": "failed", "exit_code": 3, "ended_at": T0 + 400, "tail": ["boom"]}
    docs["sessions"][2]["closed"] = {"status": "failed", "at": T0 + 401}
    docs["final"] = {"status": "failed", "session": 3, "reason": "script failure budget exhausted"}
    tries = [*TRIES[:2], {**TRIES[2], "state": "failed"}]
    view = model.run_view(docs, tries, now=T0 + 500, ti_state="failed")
    assert view["tries"][2]["ended_by"] == "script failed with exit code 3"
    assert view["tries"][2]["kind"] == "failure"
    assert view["state"]["text"] == "failed: script failure budget exhausted"
    html = render.run_page(view, title="t", now=T0 + 500)
    assert "boom" in html and "id='live'" not in html


def test_page_escapes_what_it_shows() -> None:
    docs = _docs()
    docs["sessions"][0]["launch"]["instance_type"] = "<script>x</script>"
    html = render.run_page(model.run_view(docs, TRIES, now=T0 + 500), title="<b>", now=T0 + 500)
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html


def test_fleet_totals_pairs_and_runs_near_a_budget() -> None:
    done = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    live = model.run_view(_docs(running=True), TRIES[:2], now=T0 + 303, ti_state="deferred")
    board = model.fleet(
        [
            {"dag_id": "a", "task_id": "t", "run_id": "r1", "map_index": -1, "ti_state": "success", "view": done},
            {"dag_id": "b", "task_id": "t", "run_id": "r2", "map_index": -1, "ti_state": "deferred", "view": live},
        ],
        now=T0 + 600,
        since=T0 - 10,
    )
    assert board["totals"]["running"] == 1 and board["totals"]["finished"] == 1
    assert board["totals"]["interruptions"] == 4
    assert {(p["instance_type"], p["zone"]): p["interruptions"] for p in board["interruptions_by_pair"]} == {
        ("g5.xlarge", "us-east-1a"): 2,
        ("g5.xlarge", "us-east-1b"): 2,
    }
    assert [r["dag_id"] for r in board["close_to_budget"]] == ["b"]  # the finished run is not at risk
    assert board["totals"]["saved_usd"] > 0
    html = render.fleet_page(board, days=7, run_link=lambda r: f"/x/{r['dag_id']}")
    assert "interruptions 0 left of 2" in html and "/x/b" in html


def test_each_try_links_its_own_instance() -> None:
    view = model.run_view(_docs(), TRIES, now=T0 + 500, ti_state="success")
    local = model.with_instance_links(view, {"console_url": "http://127.0.0.1:5000/_emulator/pages"})
    assert [t["instance_url"] for t in local["tries"]] == [
        f"http://127.0.0.1:5000/_emulator/pages/instances/i-{n}" for n in (1, 2, 3)
    ]
    console = model.with_instance_links(
        model.run_view(_docs(), TRIES, now=T0 + 500), {"aws_domain": "amazonaws.cn", "region_name": "cn-north-1"}
    )
    assert console["sessions"][0]["instance_url"] == (
        "https://console.amazonaws.cn/ec2/home?region=cn-north-1#InstanceDetails:instanceId=i-1"
    )
    html = render.run_page(local, title="t", now=T0 + 500)
    assert "href='http://127.0.0.1:5000/_emulator/pages/instances/i-1'" in html
    assert model.with_instance_links(view, {})["tries"][0]["instance_url"] is None
    # Airflow's own "Spot instance" link of an older try (ui/trylink.py) resolves the same way
    assert [model.try_instance(_docs(), TRIES, n, now=T0 + 500) for n in (1, 2, 3, 4)] == ["i-1", "i-2", "i-3", None]


def test_a_session_planned_but_not_launched_is_no_session() -> None:
    docs = _docs(running=True)
    docs["sessions"].append({"session": 4, "start": None, "launch": None, "heartbeat": None, "outcome": None})
    view = model.run_view(docs, TRIES, now=T0 + 303, ti_state="deferred")
    assert [s["session"] for s in view["sessions"]] == [1, 2, 3]
    assert view["state"]["phase"] == "running"


def test_a_deadline_run_shows_the_deadline_and_what_the_policy_decided_and_why() -> None:
    docs = _docs(running=True)
    docs["deadline"] = {"deadline_at": T0 + 7200, "expected_hours": 0.1, "first_started_at": T0}
    docs["sessions"][2]["decision"] = {
        "action": "on-demand",
        "point": "capacity",
        "reason": "on-demand: 0.3 h behind the line",
        "at": T0 + 215,
        "deadline_at": T0 + 7200,
        "ahead_hours": -0.3,
        "predicted_finish": T0 + 3600,
    }
    view = model.run_view(docs, TRIES, now=T0 + 310)
    assert view["deadline"]["decision"] == (
        "on-demand: 0.3 h behind the line; 0.30 h behind the line to 10:00; predicted finish 09:00 UTC"
    )
    assert view["sessions"][2]["policy"] == view["deadline"]["decision"] and view["sessions"][0]["policy"] is None
    page = render.run_page(view, title="t", now=T0 + 310)
    assert (
        "data-testid='deadline'>deadline 2027-01-15 10:00:00 UTC" in page and "policy: on-demand: 0.3 h behind" in page
    )
    assert model.run_view(_docs(), TRIES, now=T0 + 500)["deadline"] is None  # without deadline= nothing changes
