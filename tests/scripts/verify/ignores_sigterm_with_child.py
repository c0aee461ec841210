"""Ignores SIGTERM, and so does a child it starts: a short run simply finishes despite the notice."""

from _train import run

run(on_sigterm="ignore", ignoring_child=True)
