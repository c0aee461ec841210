"""The rules for workdir-relative paths: every name Linux can hold is stored, nothing escapes the workdir.

A Linux file name is any bytes but ``/`` and NUL, up to NAME_MAX (255) bytes; a path is passed to
the kernel in at most PATH_MAX (4096) bytes with its NUL. The ledger stores a relative path as a
JSON string: the name's bytes decoded as UTF-8, and each byte that is not part of valid UTF-8 as
the lone surrogate U+DC80-U+DCFF (Python's ``surrogateescape``, what ``os`` functions give and take
on a UTF-8 filesystem encoding), which JSON writes as a ``\\udcXX`` escape. So ``1:30.log``,
``a\\b.txt``, names with a tab, a CR or a non-UTF-8 byte all round-trip bit-exact. One check serves
restore (untrusted input) and sync (so a manifest that restore would refuse is never committed).
"""

from __future__ import annotations

import os
import re
import stat

from airflow_grid_resume.ledger.errors import UnsafePathError

# Restore writes into temporary names ``<dir>/.grid-resume-tmp-XXXXXXXX`` (older agents appended the
# marker to the target's name); sync never records them, and no manifest may hold one.
TEMP_MARKER = ".grid-resume-tmp"
_TEMP_NAME = re.compile(r"\.grid-resume-tmp-[0-9a-f]{8}\Z")
NAME_MAX = 255
PATH_MAX = 4096
# Room a path needs beyond its own bytes: a "/" after the workdir, the kernel's NUL, and restore's
# temporary name in place of a last component shorter than it.
TEMP_NAME_BYTES = len(TEMP_MARKER) + 9


def is_temp_name(name: str) -> bool:
    """Whether one path component is a restore temporary (this agent's form or an older one's)."""
    return _TEMP_NAME.search(name) is not None


def path_bytes(path: str) -> bytes:
    """The bytes a stored path names (see the module docstring); UnsafePathError if it names none."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise UnsafePathError(f"path {path!r} holds a character no file name can hold ({exc.reason})") from exc
    if raw.decode("utf-8", "surrogateescape") != path:
        # Escaped bytes that form valid UTF-8 would name the same file as the plain text: one spelling only.
        raise UnsafePathError(f"path {path!r} spells valid UTF-8 as escaped bytes")
    return raw


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a relative path inside the workdir that Linux can hold, else raise.

    Rejected: empty or non-string paths, absolute paths, ``.``, ``..`` and empty components, NUL,
    a component over NAME_MAX bytes, a path over PATH_MAX bytes, text that names no bytes, and
    restore's temporary names. Any other byte is allowed (``:``, ``\\``, control characters, non-UTF-8
    bytes). The check is purely textual; :func:`safe_target` also checks the filesystem.
    """
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"empty or non-string path {path!r}")
    if path.startswith("/"):
        raise UnsafePathError(f"absolute path {path!r} is not allowed")
    if "\0" in path:
        raise UnsafePathError(f"NUL in path {path!r} is not allowed")
    raw = path_bytes(path)
    if len(raw) >= PATH_MAX:
        raise UnsafePathError(f"path {path!r} is {len(raw)} bytes, over PATH_MAX ({PATH_MAX} with its NUL)")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(f"path {path!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise UnsafePathError(f"path {path!r} has a component over NAME_MAX ({NAME_MAX} bytes)")
        if is_temp_name(part):
            raise UnsafePathError(f"path {path!r} is a restore temporary name ({TEMP_MARKER}-XXXXXXXX)")
    return path


def storable_path(root: str, rel: str) -> str | None:
    """Why ``rel`` found under ``root`` cannot be checkpointed, or None: sync asks this of every entry,
    so what it commits is what restore accepts, and a restore into ``root`` can open it by its path."""
    try:
        check_relative_path(rel)
    except UnsafePathError as exc:
        return str(exc)
    last = rel.rsplit("/", 1)[-1]
    room = len(os.fsencode(root)) + 1 + len(path_bytes(rel)) + max(0, TEMP_NAME_BYTES - len(path_bytes(last))) + 1
    if room > PATH_MAX:
        return (
            f"{rel!r} is too deep: with the workdir {root!r} its path is over PATH_MAX ({PATH_MAX} bytes), so no "
            "restore could create it"
        )
    return None


def safe_target(root: str, rel: str) -> str:
    """Absolute path of ``rel`` under ``root``, refusing any parent that is a symlink or not a dir.

    The final component may be anything: callers replace it atomically (rename, symlink swap),
    which never follows an existing symlink at that name.
    """
    check_relative_path(rel)
    parts = rel.split("/")
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(
                f"path {rel!r} goes through {os.path.relpath(current, root)!r}, which is not a directory"
            )
    return os.path.join(root, *parts)
