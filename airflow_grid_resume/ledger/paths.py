"""Validation of relative paths read back from the ledger: nothing may land outside the workdir."""

from __future__ import annotations

import os
import stat

from airflow_grid_resume.ledger.errors import UnsafePathError

# Restore writes into temporary names with this marker; sync never records them.
TEMP_MARKER = ".grid-resume-tmp"


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside the workdir, else raise.

    Rejected: empty paths, absolute paths, backslashes (Windows separators that some tools
    treat as separators), ``.`` and ``..`` components, empty components, NUL and other control
    characters. The check is purely textual; :func:`safe_target` also checks the filesystem.
    """
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"empty or non-string path {path!r}")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(f"absolute path {path!r} is not allowed")
    if "\\" in path:
        raise UnsafePathError(f"backslash in path {path!r} is not allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UnsafePathError(f"control character in path {path!r} is not allowed")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(f"path {path!r} has an empty, '.' or '..' component")
    if TEMP_MARKER in path:
        raise UnsafePathError(f"path {path!r} uses the reserved marker {TEMP_MARKER!r}")
    return path


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
