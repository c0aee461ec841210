"""Resumes, but its RNG is not in the checkpoint: the result depends on where it was interrupted."""

from _train import run

run(reseed_on_start=True)
