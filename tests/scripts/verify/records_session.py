"""Resumable, and writes the session it finished in into config.json: bytes that depend on the interruptions."""

from _train import run

run(record_session=True)
