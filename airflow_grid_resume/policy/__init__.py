"""The deadline-aware choice between spot pools, on-demand and waiting: pure, standard library only.

``view.py`` holds what a decision sees and says, ``baselines.py`` the published rules we measure against,
``deadline.py`` our policy and ``decide``, ``traces.py`` / ``simulate.py`` the trace replay behind
``grid-resume simulate`` (``cli.py``), ``tracegen.py`` seeded synthetic traces.
"""

from airflow_grid_resume.policy.deadline import POLICIES, decide
from airflow_grid_resume.policy.view import ON_DEMAND, Decision, PolicyView, PoolView

__all__ = ["ON_DEMAND", "POLICIES", "Decision", "PolicyView", "PoolView", "decide"]
