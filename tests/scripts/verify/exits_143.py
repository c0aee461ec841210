"""No SIGTERM handler: dies of the signal (exit 143); it resumes from its periodic checkpoint."""

from _train import run

run(on_sigterm="default")
