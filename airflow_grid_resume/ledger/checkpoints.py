"""What a manifest's ``extra`` says of the checkpoint it holds, for runs whose script prints checkpoint markers.

A marker run's manifests carry ``"markers": true``; the complete ones also ``"checkpoint"``: ``"marker"`` (the set
captured at a ``grid-resume: checkpoint`` line) or ``"exit"`` (the final sync after the command exited 0). Restore
tries an incomplete one only after every complete one failed; retention (gc, the agent's own pruning) always keeps
the newest complete one, so a run never has only torn checkpoints left. Runs without markers write neither key.
"""

from __future__ import annotations

from collections.abc import Sequence

MARKED = "marker"  # a manifest of a capture taken at a checkpoint marker
EXITED = "exit"  # the final sync after the command exited 0 (by itself, or having saved after SIGTERM)


def manifest_extra(uses_markers: bool, complete: str | None) -> dict:
    """The ``extra`` of a manifest the agent commits. Nothing for runs without markers."""
    if not uses_markers:
        return {}
    return {"markers": True, **({"checkpoint": complete} if complete else {})}


def uses_markers(extra: dict | None) -> bool:
    return extra is not None and extra.get("markers") is True


def is_complete(extra: dict | None) -> bool:
    return extra is not None and extra.get("checkpoint") in (MARKED, EXITED)


def restore_defers(extra: dict | None) -> bool:
    """A manifest restore tries only after every complete one: written by a run that uses markers, and
    not itself complete (a set of files the script never declared consistent)."""
    return uses_markers(extra) and not is_complete(extra)


def newest_complete_kept(extras_newest_first: Sequence[dict | None], keep: int) -> int | None:
    """The index of a manifest retention must keep beyond the newest ``keep``: the newest complete one of a marker
    run, when every one of the newest ``keep`` is incomplete. None when nothing more needs keeping."""
    if any(not restore_defers(extra) for extra in extras_newest_first[:keep]):
        return None  # a kept one is complete, or the run does not use markers
    for index, extra in enumerate(extras_newest_first):
        if index >= keep and is_complete(extra):
            return index
    return None
