"""The libraries that travel inside the agent's zipapp, made importable on an image that has only python3.

botocore reads its service models with ``open()`` from its package directory, which a zip is not, so the
libraries are extracted once to a directory named by their digest (beside the zipapp, else in the temp
directory) and put first on ``sys.path``. Standard library only: it runs before any library is importable.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile

PREFIX = "grid_resume_libs/"
_COMPLETE = ".complete"


def extract(archive: str, key: str, bases: list | None = None) -> str | None:
    """The directory holding the archive's libraries (extracted now unless a complete copy exists), or None for
    an archive built without them. The copy is made under a temporary name and renamed: two agents starting at
    once never see half a copy."""
    with zipfile.ZipFile(archive) as zf:
        members = [info for info in zf.infolist() if info.filename.startswith(PREFIX)]
        if not members:
            return None
        errors = []
        for base in bases or [os.path.dirname(os.path.abspath(archive)), tempfile.gettempdir()]:
            target = os.path.join(base, ".grid-resume-libs-" + key)
            if os.path.isfile(os.path.join(target, _COMPLETE)):
                return target
            try:
                staging = tempfile.mkdtemp(prefix=".grid-resume-libs-", dir=base)
            except OSError as exc:
                errors.append(f"{base}: {exc.strerror}")
                continue
            try:
                for info in members:
                    relative = info.filename[len(PREFIX) :]
                    if not relative or relative.startswith("/") or ".." in relative.split("/"):
                        continue
                    dest = os.path.join(staging, relative)
                    if info.is_dir():
                        os.makedirs(dest, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                with open(os.path.join(staging, _COMPLETE), "w") as fh:
                    fh.write(key + "\n")
                try:
                    os.rename(staging, target)
                except OSError:  # another agent finished first: use its copy
                    if not os.path.isfile(os.path.join(target, _COMPLETE)):
                        raise
                return target
            except OSError as exc:
                errors.append(f"{base}: {exc.strerror or exc}")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        raise OSError("cannot extract the agent's libraries (" + "; ".join(errors) + ")")


def activate(archive: str, key: str) -> str | None:
    """Extract (once) and put the bundled libraries first on ``sys.path``: the agent then uses them, whatever
    boto3 the image may have."""
    target = extract(archive, key)
    if target is not None and target not in sys.path:
        sys.path.insert(0, target)
    return target
