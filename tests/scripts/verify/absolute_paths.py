"""Resumable, and writes its absolute working directory into an output (Lightning's checkpoints do)."""

from _train import run

run(record_cwd=True)
