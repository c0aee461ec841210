"""agent/lease.py: who may take the run's lease. Pure: no server."""

from __future__ import annotations


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
