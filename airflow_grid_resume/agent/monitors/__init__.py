"""The sources that can stop a session, one small monitor per source behind one interface.

A polled source is one module here that defines ``build(client, settings) -> Monitor``: ``discover`` finds
every such module, so adding a source is adding one file. ``events`` holds the ``StopEvent`` every source
produces (the supervisor's own sources too: signals, nobody watching, a lost lease) and the pure ``react``
decision; ``runner`` polls the monitors in a thread.
"""

from __future__ import annotations

import importlib
import pkgutil

from airflow_grid_resume.agent.imds import ImdsClient
from airflow_grid_resume.agent.monitors.events import Monitor
from airflow_grid_resume.agent.monitors.runner import MonitorSettings


def discover(client: ImdsClient, settings: MonitorSettings) -> list[Monitor]:
    """One monitor per source module of this package, in the order of their names."""
    monitors = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        build = getattr(module, "build", None)
        if callable(build):
            monitors.append(build(client, settings))
    return monitors
