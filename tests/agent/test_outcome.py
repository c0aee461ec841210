"""agent/outcome.py: how a command's exit is classified. Pure: no server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.agent.outcome import FAILED, INTERRUPTED, SUCCEEDED, classify


# -- exit classification table ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("returncode", "signalled", "killed", "status", "clean", "agent_exit"),
    [
        (0, False, False, SUCCEEDED, True, 0),
        (1, False, False, FAILED, False, 1),
        (127, False, False, FAILED, False, 127),
        (-9, False, False, FAILED, False, 137),  # killed by someone else, no notice: a failure
        (0, True, False, INTERRUPTED, True, 0),  # the contract
        (143, True, False, INTERRUPTED, True, 0),  # accepted with a warning
        (-15, True, False, INTERRUPTED, True, 0),
        (3, True, False, INTERRUPTED, False, 0),  # after our SIGTERM: interrupted, not failed
        (-9, True, True, INTERRUPTED, False, 0),  # killed after the deadline
    ],
)
def test_exit_classification(returncode, signalled, killed, status, clean, agent_exit) -> None:
    c = classify(returncode, signalled=signalled, killed_after_deadline=killed)
    assert (c.status, c.clean, c.agent_exit_code) == (status, clean, agent_exit)
    if returncode in (143, -15):
        assert any("143" in w for w in c.warnings)
