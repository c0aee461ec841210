"""Saves on SIGTERM and exits 0, but never reads its checkpoint: every session starts from step 0."""

from _train import run

run(resume=False)
