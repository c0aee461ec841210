"""Do the interrupted run's final outputs match the reference's? Compared by sha256 from the final
manifests: the files as the run leaves them in S3, which is what a user of the run gets. A file whose
bytes differ may still have the same content (``verify.compare``): ``contents`` holds those verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_grid_resume.agent.scan import PathFilter
from airflow_grid_resume.ledger.manifest import Manifest
from airflow_grid_resume.verify.compare import Comparison


@dataclass(frozen=True)
class OutputDiff:
    same: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)  # the bytes differ
    missing: list[str] = field(default_factory=list)  # in the reference, not in the interrupted run
    extra: list[str] = field(default_factory=list)  # in the interrupted run only
    contents: dict[str, Comparison] = field(default_factory=dict)  # path in differ -> its content comparison

    @property
    def equivalent(self) -> list[str]:
        """Bytes differ, content the same."""
        return [p for p in self.differ if p in self.contents and self.contents[p].equal]

    @property
    def different(self) -> list[str]:
        """Bytes differ, and the content too (or it could not be compared by content)."""
        return [p for p in self.differ if p not in self.equivalent]

    @property
    def matches(self) -> bool:
        return not (self.different or self.missing or self.extra)

    @property
    def compared(self) -> int:
        return len(self.same) + len(self.differ) + len(self.missing) + len(self.extra)


def file_hashes(manifest: Manifest | None) -> dict[str, str]:
    """path -> sha256 of every file in a manifest (empty for none)."""
    return {} if manifest is None else {f.path: f.sha256 for f in manifest.files}


def diff_outputs(reference: Mapping[str, str], run: Mapping[str, str], globs: Sequence[str]) -> OutputDiff:
    """Compare the files matching ``globs`` (the agent's include syntax: a glob with ``/`` matches
    the whole relative path, one without matches any path component)."""
    if not globs:
        return OutputDiff()
    selected = PathFilter(include=list(globs))
    ref = {p: h for p, h in reference.items() if selected.included_file(p)}
    got = {p: h for p, h in run.items() if selected.included_file(p)}
    return OutputDiff(
        same=sorted(p for p in ref if got.get(p) == ref[p]),
        differ=sorted(p for p in ref if p in got and got[p] != ref[p]),
        missing=sorted(p for p in ref if p not in got),
        extra=sorted(p for p in got if p not in ref),
    )
