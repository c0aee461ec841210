"""``grid-resume gc``: keep the newest checkpoints of a run and delete what nothing kept references.

Safe while an agent syncs the same run, without a lock (the order and the grace period are the
whole protocol; docs/ledger.md, "Garbage collection"):

1. Packs and objects are listed *before* the manifests. Whatever a manifest committed after that
   LIST references is either in the kept newest manifest (a sync reuses bytes of the last
   committed manifest only) or was uploaded by that sync.
2. Bytes no kept manifest references are deleted only when older than the grace period (an hour by
   default): bytes uploaded by a sync whose manifest is not committed yet are younger than that. Their
   age is read by a HEAD at the moment of deleting each (``RunLedger.delete_if_older``), not taken from
   the LIST: a sync may have written the same content-addressed key again since (a file reverted to
   bytes an old checkpoint held). A sync that runs longer than ``SYNC_COMMIT_WINDOW`` re-dates what
   it uploaded before committing (agent/sync.py), so the grace must be longer than that window.
3. Manifests are deleted before the bytes they alone referenced, so an interrupted gc leaves only
   garbage, never a manifest that points at nothing.
4. After deleting, the manifests are listed again: one committed meanwhile that references a deleted
   key (a sync re-wrote it between gc's HEAD and its DELETE) is reported (``GcPlan.damaged``); the
   sync that committed it finds the key missing when it checks its re-written keys after the commit
   and uploads them again in a new manifest.
5. On a versioned bucket a deleted key's bytes stay as a noncurrent version: gc then removes the
   versions of the keys it deleted, never of any other key (``ledger/versions.py``), or says once
   which lifecycle rule does it.

A pack with some live bytes is kept whole: manifests are immutable and map files straight to pack
ranges, so repacking would mean rewriting committed checkpoints. Its dead bytes are reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from airflow_grid_resume.ledger import layout, records
from airflow_grid_resume.ledger.checkpoints import newest_complete_kept
from airflow_grid_resume.ledger.compat import zip_strict
from airflow_grid_resume.ledger.errors import AgentError, ManifestError, UsageError
from airflow_grid_resume.ledger.manifest import Manifest
from airflow_grid_resume.ledger.store import RunLedger, StoredManifest
from airflow_grid_resume.ledger.versions import purge_noncurrent

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3
DEFAULT_GRACE_SECONDS = 3600.0
# A sync whose first upload is older than this when it commits re-dates what it uploaded first (agent/sync.py).
SYNC_COMMIT_WINDOW = DEFAULT_GRACE_SECONDS / 2
DELETE_PARALLELISM = 8


@dataclass(frozen=True)
class Blob:
    """A stored pack or object, as listed."""

    key: str
    size: int
    modified: float  # epoch seconds (S3's LastModified)


@dataclass
class GcPlan:
    kept: list[str] = field(default_factory=list)  # manifest names kept, newest first
    manifests: list[StoredManifest] = field(default_factory=list)  # to delete
    blobs: list[Blob] = field(default_factory=list)  # packs and objects to delete
    young: list[Blob] = field(default_factory=list)  # unreferenced but within the grace period
    stored: int = 0
    stored_bytes: int = 0
    live_pack_bytes: int = 0  # size of kept packs
    dead_pack_bytes: int = 0  # bytes inside kept packs no kept manifest references
    damaged: list[str] = field(default_factory=list)  # manifests committed during the gc that lost a key to it
    versions_removed: int = 0  # noncurrent versions and delete markers of deleted keys (versioned buckets)
    versions_note: str | None = None  # the lifecycle rule to add, when gc could not remove them itself

    def lines(self, uri: str, grace: float, applied: bool) -> list[str]:
        packs = [b for b in self.blobs if _is_pack(b.key)]
        objects = [b for b in self.blobs if not _is_pack(b.key)]
        out = [
            f"run {uri}: keeping {len(self.kept)} manifest(s) ({', '.join(self.kept) or 'none'}), "
            f"{'deleted' if applied else 'would delete'} {len(self.manifests)}",
            f"packs and objects: {self.stored} stored ({_mib(self.stored_bytes)}); "
            f"{'deleted' if applied else 'would delete'} {len(packs)} pack(s) ({_mib(sum(b.size for b in packs))}) "
            f"and {len(objects)} object(s) ({_mib(sum(b.size for b in objects))})",
        ]
        if self.young:
            out.append(
                f"kept {len(self.young)} unreferenced pack(s)/object(s) ({_mib(sum(b.size for b in self.young))}) "
                f"younger than the {grace / 60:.0f} min grace period (a sync may be about to commit them)"
            )
        if self.dead_pack_bytes:
            out.append(
                f"{_mib(self.dead_pack_bytes)} of the {_mib(self.live_pack_bytes)} in kept packs is referenced by "
                "no kept manifest (a pack is deleted once none of its bytes is referenced)"
            )
        for name in self.damaged:
            out.append(
                f"error: manifest {name}, committed while gc ran, references bytes gc deleted: its session "
                "uploads them again in its next checkpoint; restore falls back past it meanwhile"
            )
        if self.versions_removed:
            out.append(f"removed {self.versions_removed} noncurrent version(s) and delete marker(s) of deleted keys")
        if self.versions_note:
            out.append(self.versions_note)
        if not applied:
            out.append("dry run: nothing was deleted (add --apply to delete)")
        return out


def _is_pack(key: str) -> bool:
    return f"/{layout.PACKS}/" in f"/{key}"


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def plan_gc(
    manifests: Sequence[tuple[StoredManifest, Manifest | None]],
    pinned: set[str],
    blobs: Sequence[Blob],
    *,
    keep: int,
    grace: float,
    now: float,
    key_of: RunLedger,
) -> GcPlan:
    """What to keep and delete. ``manifests`` newest first, each parsed (None: unreadable);
    ``pinned`` names manifests kept whatever their age (the pointer's, a live session's). A run whose script
    prints checkpoint markers also keeps its newest complete checkpoint when the newest ``keep`` are all
    incomplete (``ledger/checkpoints.py``): a torn one must never be all that is left to resume from."""
    if keep < 1:
        raise UsageError(f"--keep must be at least 1 (the newest checkpoint is what a run resumes from), got {keep}")
    plan = GcPlan()
    kept: list[Manifest] = []
    complete = newest_complete_kept([m.extra if m is not None else None for _, m in manifests], keep)
    for i, (stored, manifest) in enumerate(manifests):
        if i < keep or stored.name in pinned or i == complete:
            if manifest is None:
                raise ManifestError(f"kept manifest {stored.name} cannot be read: nothing was deleted")
            kept.append(manifest)
            plan.kept.append(stored.name)
        else:
            plan.manifests.append(stored)
    referenced: dict[str, list[tuple[int, int]]] = {}  # key -> byte ranges used
    for manifest in kept:
        for f in manifest.files:
            for key in key_of.blob_keys(f):
                referenced.setdefault(key, []).append((f.offset, f.offset + f.size) if f.pack else (0, f.size))
    for blob in blobs:
        plan.stored += 1
        plan.stored_bytes += blob.size
        if blob.key in referenced:
            if _is_pack(blob.key):
                plan.live_pack_bytes += blob.size
                plan.dead_pack_bytes += blob.size - _covered(referenced[blob.key])
        elif now - blob.modified < grace:
            plan.young.append(blob)
        else:
            plan.blobs.append(blob)
    return plan


def _covered(ranges: list[tuple[int, int]]) -> int:
    total, end = 0, 0
    for a, b in sorted(ranges):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _pinned(ledger: RunLedger, now: float) -> set[str]:
    """Manifests kept whatever their age: the pointer's and the live lease holder's last one
    (the manifest a running session reuses bytes from)."""
    out = set()
    pointer = ledger.read_pointer()
    if pointer:
        out.add(pointer[0])
    lease = ledger.read_record(records.Lease)  # unreadable or newer: gc stops before deleting anything
    if lease is not None and lease.held(now) and lease.session is not None:
        beat = ledger.read_record(records.Heartbeat, lease.session)
        if beat is not None and beat.last_manifest:
            out.add(beat.last_manifest)
    return out


def _list_blobs(ledger: RunLedger) -> list[Blob]:
    out = []
    for prefix in (ledger.key(layout.PACKS) + "/", ledger.key(layout.OBJECTS) + "/"):
        for item in ledger.list(prefix):
            out.append(Blob(item["Key"], int(item["Size"]), item["LastModified"].timestamp()))
    return out


def collect_garbage(
    ledger: RunLedger, *, keep: int = DEFAULT_KEEP, apply: bool = False, grace: float = DEFAULT_GRACE_SECONDS
) -> GcPlan:
    """Plan (and with ``apply``, carry out) a gc of one run; see the module docstring."""
    now = time.time()
    blobs = _list_blobs(ledger)  # first: see 1. above
    stored = ledger.list_manifests()
    pinned = _pinned(ledger, now)
    manifests: list[tuple[StoredManifest, Manifest | None]] = []
    for i, s in enumerate(stored):
        try:
            manifests.append((s, ledger.read_manifest(s)))
        except ManifestError as exc:  # a newer format raises UnsupportedFormatError: not caught
            if i < keep or s.name in pinned:
                raise ManifestError(f"kept manifest {s.name} cannot be read ({exc}): nothing was deleted") from exc
            manifests.append((s, None))
    plan = plan_gc(manifests, pinned, blobs, keep=keep, grace=grace, now=now, key_of=ledger)
    if apply:
        ledger.delete_keys([m.key for m in plan.manifests])  # before the bytes: see 3. above
        _delete_blobs(ledger, plan, grace)
        plan.damaged = _damaged(ledger, {s.key for s in stored}, {b.key for b in plan.blobs})
        # On a versioned bucket the deleted keys' bytes are still stored: remove those versions too.
        purge = purge_noncurrent(
            ledger,
            [m.key for m in plan.manifests] + [b.key for b in plan.blobs],
            [ledger.key(p) + "/" for p in (layout.MANIFESTS, layout.PACKS, layout.OBJECTS)],
        )
        plan.versions_removed, plan.versions_note = purge.removed, purge.note
    return plan


def _delete_blobs(ledger: RunLedger, plan: GcPlan, grace: float) -> None:
    """Delete the plan's blobs that are still older than the grace period when deleted (see 2. above);
    ``plan.blobs`` ends as what was deleted, ``plan.young`` gains what a sync wrote again since."""
    candidates, plan.blobs = plan.blobs, []
    with ThreadPoolExecutor(max_workers=DELETE_PARALLELISM, thread_name_prefix="grid-gc") as pool:
        verdicts = list(pool.map(lambda b: ledger.delete_if_older(b.key, time.time() - grace), candidates))
    for blob, deleted in zip_strict(candidates, verdicts):
        if deleted:
            plan.blobs.append(blob)
        elif deleted is False:
            log.info("kept %s: written again since it was listed (a sync is reusing it)", blob.key)
            plan.young.append(blob)


def _damaged(ledger: RunLedger, seen: set[str], deleted: set[str]) -> list[str]:
    """Manifests committed since gc listed them that reference a key it deleted (see 4. above)."""
    if not deleted:
        return []
    out = []
    for stored in ledger.list_manifests():
        if stored.key in seen:
            continue
        try:
            manifest = ledger.read_manifest(stored)
        except ManifestError:
            continue
        if any(k in deleted for f in manifest.files for k in ledger.blob_keys(f)):
            log.error("manifest %s was committed during gc and references bytes it deleted", stored.name)
            out.append(stored.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from airflow_grid_resume.ledger.s3client import make_s3_client
    from airflow_grid_resume.ledger.uri import parse_s3_uri

    parser = argparse.ArgumentParser(
        prog="grid-resume gc",
        description="Keep a run's newest checkpoints and delete what no kept checkpoint references.",
    )
    parser.add_argument("--run-uri", required=True, help="s3://BUCKET/PREFIX of the run's ledger")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help=f"checkpoints to keep (default {DEFAULT_KEEP})")
    parser.add_argument("--apply", action="store_true", help="delete (without it, only report what would go)")
    parser.add_argument(
        "--grace-minutes",
        type=float,
        default=DEFAULT_GRACE_SECONDS / 60,
        help="unreferenced bytes younger than this are kept: a running sync may be about to commit them",
    )
    parser.add_argument("--region", help="AWS region of the bucket (default: the boto3 chain)")
    args = parser.parse_args(argv)
    if args.apply and args.grace_minutes * 60 <= SYNC_COMMIT_WINDOW:
        print(
            f"grid-resume gc: warning: --grace-minutes {args.grace_minutes:g} is not longer than the "
            f"{SYNC_COMMIT_WINDOW / 60:.0f} min a sync may take before it re-dates its uploads: a sync running "
            "now may lose bytes it is about to commit",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.WARNING, format="grid-resume gc: %(message)s")
    try:
        ledger = RunLedger(make_s3_client(region=args.region), parse_s3_uri(args.run_uri))
        ledger.check_access()
        plan = collect_garbage(ledger, keep=args.keep, apply=args.apply, grace=max(0.0, args.grace_minutes) * 60)
    except (AgentError, ManifestError) as exc:
        print(f"grid-resume gc: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    for line in plan.lines(args.run_uri, max(0.0, args.grace_minutes) * 60, args.apply):
        print(line)
    return 1 if plan.damaged else 0
