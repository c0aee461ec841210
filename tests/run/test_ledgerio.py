"""run/ledgerio.py over moto's server: a forged final.json is not believed; the agent and spec the user data names."""

from __future__ import annotations

import hashlib

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.run.ledgerio import believed_final, ensure_agent, newest_generation, run_view


def test_a_forged_final_json_saying_succeeded_is_not_believed(ledger: RunLedger, run_uri: str) -> None:
    """Written by an instance (a bucket policy looser than the guide's): the run has no session that succeeded, so
    a clear must not report "already succeeded" without training."""
    ledger.write_record(records.Spec(command=["python", "train.py"], run_uri=run_uri))
    ledger.write_record(records.Outcome(session=1, status="interrupted"), 1)
    ledger.write_record(records.Final(status="succeeded", session=1, reason="succeeded", at=1.0))
    assert believed_final(ledger) is None
    assert newest_generation(ledger, run_uri)[2] is None  # the try resumes the run instead of reporting it
    ledger.write_record(records.Final(status="succeeded", session=9, reason="succeeded", at=1.0))
    assert believed_final(ledger) is None  # a session that never existed


def test_a_final_json_the_records_agree_with_is_believed(ledger: RunLedger, run_uri: str) -> None:
    ledger.write_record(records.Outcome(session=2, status="succeeded"), 2)
    ledger.write_record(records.Final(status="succeeded", session=2, reason="succeeded", at=1.0))
    assert believed_final(ledger) is None  # an outcome of a session the Airflow side never planned proves nothing
    ledger.write_record(records.LaunchAttempt(session=2, expires_at="2030-01-01T00:00:00Z"), 2)
    final = believed_final(ledger)
    assert final is not None and final.session == 2
    ledger.write_record(records.Final(status="succeeded", session=3, reason="succeeded", at=1.0))
    ledger.write_record(records.Closed(status="succeeded", instance_id="i-3"), 3)  # the Airflow side's verdict
    assert (believed_final(ledger) or records.Final(status="")).session == 3
    ledger.write_record(records.Final(status="failed", session=3, reason="budget", at=1.0))
    assert (believed_final(ledger) or records.Final(status="")).status == "failed"


def test_the_agent_is_uploaded_again_only_when_s3_no_longer_holds_it(ledger: RunLedger) -> None:
    builds: list[bytes] = []

    def build() -> bytes:
        builds.append(b"agent build %d" % len(builds))
        return builds[-1]

    first = ensure_agent(ledger, None, build)
    assert first == hashlib.sha256(b"agent build 0").hexdigest() and len(builds) == 1
    assert ensure_agent(ledger, first, build) == first and len(builds) == 1  # a retry: nothing rebuilt or sent
    ledger.put(ledger.key(layout.AGENT_ZIPAPP), b"changed by someone else")
    again = ensure_agent(ledger, first, build)
    assert len(builds) == 2 and again == hashlib.sha256(b"agent build 1").hexdigest()
    assert ledger.get(ledger.key(layout.AGENT_ZIPAPP)) == b"agent build 1"


def test_a_forged_outcome_of_a_session_never_launched_does_not_end_the_run(ledger: RunLedger) -> None:
    """An instance writes sessions/000099/outcome.json "succeeded" into another run: the try must not report that
    run as succeeded, since the Airflow side never planned session 99."""
    ledger.write_record(records.LaunchAttempt(session=1, expires_at="2030-01-01T00:00:00Z"), 1)
    ledger.write_record(records.Outcome(session=99, status="succeeded"), 99)
    assert not run_view(ledger, {}).newest_succeeded
    ledger.write_record(records.LaunchAttempt(session=99, expires_at="2030-01-01T00:00:00Z"), 99)
    assert run_view(ledger, {}).newest_succeeded  # the Airflow side's own session: believed
