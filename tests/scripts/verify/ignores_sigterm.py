"""Ignores SIGTERM: the agent must kill it at the deadline; it resumes from its periodic checkpoint."""

from _train import run

run(on_sigterm="ignore")
