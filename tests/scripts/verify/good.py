"""Resumable: saves atomically on SIGTERM (and every 5 steps), exits 0, resumes from its checkpoint."""

from _train import run

run()
