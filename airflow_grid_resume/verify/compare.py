"""Comparing an output whose bytes differ from the reference's by its content. Pure: no I/O.

Bytes are what a user of the run gets, and most outputs are compared by them alone. Some formats
cannot be bit-exact across a resume although nothing the user cares about differs: a PyTorch
Lightning trainer checkpoint pickles the same values with another layout once they were loaded
from a file, and records loop bookkeeping that depends on where a session stopped. For those:

- **torch files** (``.ckpt``, ``.pt``, ``.pth``, when torch is importable where verify runs): both
  files are loaded and walked key by key; every tensor must be bit-identical (dtype, shape, every
  value) and every other value equal; only the documented bookkeeping keys (``LIGHTNING_RULES``)
  may differ, and those that did are listed in the report;
- **a user's comparator** (``--compare-command CMD``) for any other output whose bytes differ:
  ``CMD REFERENCE_PATH RESUMED_PATH``, exit 0 = equivalent;
- everything else: the bytes, as before.

The walk (``compare_trees``) knows plain containers and values; tensors and arrays are leaves
compared by a function passed in (``verify.torchfiles``), so this module needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BYTES, TORCH, COMMAND = "bytes", "torch", "command"
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
SHOWN = 5  # differing (or ignored) keys listed in the report; the first is always the first in the file
STDERR_LINES = 12  # lines of a comparator's stderr shown

# A leaf comparison: None when it does not know the type, else (equal, what differs).
LeafCompare = Callable[[Any, Any], "tuple[bool, str] | None"]
Path = tuple[Any, ...]
_SCALARS = (str, bytes, int, float, complex, type(None), set, frozenset)


@dataclass(frozen=True)
class Comparison:
    """How one output whose bytes differ from the reference's compared by content."""

    path: str
    method: str  # BYTES, TORCH or COMMAND
    equal: bool
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class IgnoreRule:
    """Keys that may differ between an uninterrupted and a resumed run without any effect on the result."""

    name: str
    why: str
    applies: Callable[[Any], bool]  # to the whole loaded file
    matches: Callable[[Path], bool]  # to a key path in it


@dataclass(frozen=True)
class Difference:
    key: str  # as Python would index the loaded object: ['state_dict']['net.0.weight']
    what: str


@dataclass
class TreeDiff:
    differences: list[Difference] = field(default_factory=list)
    ignored: dict[str, list[Difference]] = field(default_factory=dict)  # rule name -> what differed
    values: int = 0  # leaves compared (not counting those under an ignored key)
    tensors: int = 0  # of them, tensors or arrays
    skipped: dict[str, int] = field(default_factory=dict)  # rule name -> leaves under its keys (not compared)

    @property
    def equal(self) -> bool:
        return not self.differences


def _is_lightning(top: Any) -> bool:
    return isinstance(top, Mapping) and "pytorch-lightning_version" in top


def _loop_progress(path: Path) -> bool:
    # loops / <fit_loop|validate_loop|...> / <...batch_progress|epoch_progress|...optim_progress> / total|current / ...
    return len(path) >= 3 and path[0] == "loops" and str(path[2]).endswith("progress")


def _timer_elapsed(path: Path) -> bool:
    return len(path) >= 3 and path[0] == "callbacks" and str(path[1]).startswith("Timer") and path[2] == "time_elapsed"


LIGHTNING_RULES: tuple[IgnoreRule, ...] = (
    IgnoreRule(
        "Lightning loop progress counters",
        "['loops'][loop][...progress]: how many batches, optimizer steps and epochs each loop had marked ready, "
        "started, processed and completed; a session that resumed from a checkpoint saved inside a batch counts that "
        "batch differently, while the training itself (weights, optimizer, global_step, epoch) is the same",
        _is_lightning,
        _loop_progress,
    ),
    IgnoreRule(
        "Lightning Timer's elapsed time",
        "['callbacks'][Timer...]['time_elapsed']: wall-clock seconds, different in every run",
        _is_lightning,
        _timer_elapsed,
    ),
)


def user_rule(key: str) -> IgnoreRule:
    """``--ignore-key KEY``: KEY as the report prints it (``['meta']['saved_at']``), ignored with all under it,
    in every torch file."""
    key = key.strip()

    def matches(path: Path) -> bool:
        text = key_text(path)
        return text == key or (text.startswith(key) and text[len(key)] in "[.")

    return IgnoreRule(f"--ignore-key {key}", "named by the user", lambda _top: True, matches)


def check_key(key: str) -> str:
    """What is wrong with an ``--ignore-key`` (empty when nothing)."""
    if not key.strip().startswith("["):
        return f"--ignore-key {key!r}: give the key as the report prints it, e.g. \"['meta']['saved_at']\""
    return ""


def comparison_for(path: str, *, torch_available: bool, command: Sequence[str] = ()) -> str:
    """Which comparison an output whose bytes differ gets: a torch file's content when torch can load it
    here, else the user's comparator when there is one, else the bytes."""
    if path.lower().endswith(TORCH_SUFFIXES) and torch_available:
        return TORCH
    return COMMAND if command else BYTES


def bytes_verdict(path: str, *, torch_available: bool) -> Comparison:
    """An output whose bytes differ and that nothing here can compare by content."""
    if path.lower().endswith(TORCH_SUFFIXES) and not torch_available:
        hint = (
            "compared by bytes: torch is not importable where verify runs, so its content could not be compared "
            "(install torch in verify's environment, or pass --compare-command)"
        )
    else:
        hint = "compared by bytes (pass --compare-command CMD to compare this format by content)"
    return Comparison(path, BYTES, False, "the bytes differ", (hint,))


def key_text(path: Path) -> str:
    """A key path as Python indexes the loaded object (``.name`` for an attribute); ``(the whole file)`` for ()."""
    parts = []
    for part in path:
        parts.append(f".{part[1]}" if isinstance(part, tuple) and part[:1] == ("attr",) else f"[{part!r}]")
    return "".join(parts) or "(the whole file)"


def compare_trees(
    reference: Any, resumed: Any, leaf: LeafCompare, rules: Sequence[IgnoreRule] = LIGHTNING_RULES
) -> TreeDiff:
    """Walk both loaded files in the reference's key order; every difference in order, except those under a
    key an applicable ``rules`` entry matches (kept apart, per rule)."""
    active = [r for r in rules if r.applies(reference)]
    diff = TreeDiff()

    def note(path: Path, what: str) -> None:
        rule = next((r for r in active if r.matches(path)), None)
        entry = Difference(key_text(path), what)
        if rule is None:
            diff.differences.append(entry)
        else:
            diff.ignored.setdefault(rule.name, []).append(entry)

    def count(path: Path, tensor: bool = False) -> None:
        rule = next((r for r in active if r.matches(path)), None)
        if rule is not None:
            diff.skipped[rule.name] = diff.skipped.get(rule.name, 0) + 1
        else:
            diff.values += 1
            diff.tensors += tensor

    def walk(a: Any, b: Any, path: Path) -> None:
        known = leaf(a, b)
        if known is not None:
            count(path, tensor=True)
            if not known[0]:
                note(path, known[1])
            return
        if isinstance(a, Mapping):
            if not isinstance(b, Mapping):
                note(path, f"a {_type(a)} in the reference, a {_type(b)} after interruptions")
                return
            for key in a:
                if key in b:
                    walk(a[key], b[key], (*path, key))
                else:
                    note((*path, key), "missing after interruptions")
            for key in b:
                if key not in a:
                    note((*path, key), "only after interruptions")
            return
        if isinstance(a, (list, tuple)):
            if type(a) is not type(b):
                note(path, f"a {_type(a)} in the reference, a {_type(b)} after interruptions")
            elif len(a) != len(b):
                note(path, f"{len(a)} items in the reference, {len(b)} after interruptions")
            else:
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    walk(x, y, (*path, i))
            return
        if type(a) is type(b) and not isinstance(a, _SCALARS) and hasattr(a, "__dict__"):
            # an object (only when loaded without weights_only): its attributes
            walk(dict(vars(a)), dict(vars(b)), (*path, ("attr", "__dict__")))
            return
        count(path)
        if type(a) is not type(b):
            note(path, f"{_short(a)} ({_type(a)}) in the reference, {_short(b)} ({_type(b)}) after interruptions")
        elif isinstance(a, float):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                note(path, f"{a!r} in the reference, {b!r} after interruptions")
        elif isinstance(a, _SCALARS):
            if a != b:
                note(path, f"{_short(a)} in the reference, {_short(b)} after interruptions")
        else:
            try:
                same = a == b
            except Exception:  # any == that raises: "cannot compare"
                same = None
            if not isinstance(same, bool):
                note(path, f"a {_type(a)} that verify cannot compare (its == gives no yes or no)")
            elif not same:
                note(path, f"{_short(a)} in the reference, {_short(b)} after interruptions")

    walk(reference, resumed, ())
    return diff


def tree_verdict(path: str, diff: TreeDiff, loaded_note: str = "") -> Comparison:
    """The verdict on one torch file from its walk: the first differing key named, what was ignored listed."""
    counted = f"{diff.tensors} tensors and {diff.values - diff.tensors} other values"
    total = sum(diff.skipped.values())
    skipped = f"; {_values(total)} under ignored keys not compared" if total else ""
    details = []
    if diff.differences:
        first = diff.differences[0]
        summary = f"first difference at {first.key}: {first.what}"
        more = diff.differences[1:SHOWN]
        if more:
            details.append(f"{len(diff.differences)} keys differ in all; next: " + "; ".join(_item(d) for d in more))
    else:
        how = " and in the ignored bookkeeping below" if diff.ignored else ""
        summary = (
            f"the same content: {counted} compared exactly{skipped} "
            f"(the bytes differ {'' if how else 'only '}in how they were serialized{how})"
        )
    for name, count in diff.skipped.items():
        entries = diff.ignored.get(name, [])
        if not entries:
            details.append(f"ignored ({name}): {_values(count)}, none differed")
            continue
        shown = "; ".join(_item(d) for d in entries[:SHOWN])
        extra = f" (and {len(entries) - SHOWN} more)" if len(entries) > SHOWN else ""
        details.append(f"ignored ({name}): {_values(count)}, {len(entries)} differ: {shown}{extra}")
    for name, entries in diff.ignored.items():
        if name not in diff.skipped:  # keys missing on one side only
            details.append(f"ignored ({name}): " + "; ".join(_item(d) for d in entries[:SHOWN]))
    if diff.differences:
        details.append(f"compared as a torch file: {counted}, tensors bit for bit{skipped}")
    if loaded_note:
        details.append(loaded_note)
    return Comparison(path, TORCH, diff.equal, summary, tuple(details))


def command_verdict(path: str, command: str, returncode: int | None, stderr: str, error: str = "") -> Comparison:
    """The verdict of the user's comparator: exit 0 = equivalent; its stderr shown either way."""
    lines = [line for line in stderr.splitlines() if line.strip()][-STDERR_LINES:]
    shown = tuple(f"| {line}" for line in lines)
    if error:
        return Comparison(path, COMMAND, False, f"--compare-command could not compare it: {error}", shown)
    if returncode == 0:
        return Comparison(path, COMMAND, True, f"equivalent by --compare-command {command} (exit 0)", shown)
    return Comparison(path, COMMAND, False, f"--compare-command {command} says they differ (exit {returncode})", shown)


def _values(count: int) -> str:
    return f"{count} value{'' if count == 1 else 's'}"


def _item(d: Difference) -> str:
    return f"{d.key}: {d.what}"


def _type(value: Any) -> str:
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
