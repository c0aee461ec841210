"""What in the execution directory is large, or changes on every sync: what to exclude.

Computed from the run's manifests, oldest first, after the code snapshot: each one is what a sync
committed. A file present in several of them whose sha256 changes between every consecutive pair
"churns": each sync uploads it again.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from airflow_grid_resume.ledger.manifest import Manifest

Snapshot = dict[str, tuple[int, str]]  # path -> (size, sha256)


@dataclass(frozen=True)
class FileFinding:
    path: str
    size: int  # the largest size seen
    syncs: int  # manifests holding it
    changes: int  # consecutive pairs where its content changed
    large: bool
    churns: bool

    @property
    def bytes_reuploaded(self) -> int:
        return self.size * self.changes


@dataclass(frozen=True)
class ChurnReport:
    syncs: int
    total_bytes: int  # of the newest manifest
    findings: list[FileFinding] = field(default_factory=list)

    @property
    def large(self) -> list[FileFinding]:
        return [f for f in self.findings if f.large]

    @property
    def churning(self) -> list[FileFinding]:
        return [f for f in self.findings if f.churns]


def snapshot(manifest: Manifest) -> Snapshot:
    return {f.path: (f.size, f.sha256) for f in manifest.files}


def analyse(snapshots: Sequence[Snapshot], large_bytes: int) -> ChurnReport:
    """Large files (``large_bytes`` or more, in any sync) and files that change at every sync."""
    if not snapshots:
        return ChurnReport(0, 0)
    paths = sorted({p for s in snapshots for p in s})
    findings = []
    for path in paths:
        present = [s[path] for s in snapshots if path in s]
        pairs = [(a, b) for a, b in pairwise(snapshots) if path in a and path in b]
        changes = sum(1 for a, b in pairs if a[path][1] != b[path][1])
        size = max(size for size, _ in present)
        large = size >= large_bytes
        churns = bool(pairs) and changes == len(pairs)
        if large or churns:
            findings.append(FileFinding(path, size, len(present), changes, large, churns))
    findings.sort(key=lambda f: (-f.bytes_reuploaded, -f.size, f.path))
    return ChurnReport(len(snapshots), sum(size for size, _ in snapshots[-1].values()), findings)


def suggest_excludes(findings: Sequence[FileFinding]) -> list[str]:
    """One ``--exclude`` glob per flagged directory (two or more flagged files in it) or file.

    A glob without ``/`` (a top-level name) matches that name at any depth, as the agent's filter
    does; that is what is wanted for names like ``wandb`` or ``events.log``."""
    parents = Counter(posixpath.dirname(f.path) for f in findings)
    out: list[str] = []
    for f in findings:
        parent = posixpath.dirname(f.path)
        glob = parent if parent and parents[parent] >= 2 else f.path
        if glob not in out:
            out.append(glob)
    return out
