"""Writes its checkpoint in place, slowly, at every step, and exits at once on SIGTERM: the
interruption cuts a write in half and the next session finds a truncated checkpoint."""

from _train import run

run(on_sigterm="exit", atomic=False, save_every=1, slow_write=0.15)
