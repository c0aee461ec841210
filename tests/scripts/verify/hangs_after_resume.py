"""Saves on SIGTERM, but hangs for good once resumed (as a deadlock in a resumed loader would)."""

from _train import run

run(hang_on_resume=True)
