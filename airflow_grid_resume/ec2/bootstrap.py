"""The instance's user data: fetch the agent and the run spec from the ledger, start the agent.

It holds no credentials and no secrets (the instance profile grants access to the run prefix),
only the run's URI, the session number, the region and the SHA-256 of the agent zipapp and of
``spec.json`` as the Airflow side wrote them, and stays far below EC2's 16 KB limit. Only the Airflow
side writes user data (through RunInstances), so the digests are what the instance can trust: the bucket
is written by every instance of the run prefix, and the bootstrap refuses an agent or a spec that is not
the one it was launched with (docs/security.md).
The agent runs in Python's UTF-8 mode (``-X utf8``), so file names map to manifest paths the same
way whatever the image's locale (docs/ledger.md, "Paths").
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

from airflow_grid_resume.ledger import layout

MARKER = "# grid-resume bootstrap v1 "
# "User data is limited to 16 KB, in raw form, before it is base64-encoded" (EC2 User Guide, "Work with instance
# user data"); RunInstances refuses a longer UserData with a ValidationError on its base64 length.
USER_DATA_LIMIT = 16 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
AGENT_KEY = layout.AGENT_ZIPAPP
SPEC_KEY = layout.SPEC

# The first python3 of version 3.9+ among the usual places, in this order; GRID_RESUME_PYTHONS (a space-separated
# list of interpreters) replaces them, for tests that emulate an image.
CANDIDATES = (
    "$(command -v python3 2>/dev/null)",
    *(f"$(command -v python3.{minor} 2>/dev/null)" for minor in range(14, 8, -1)),
    "/usr/bin/python3",
    "/usr/bin/python3.[0-9]",
    "/usr/bin/python3.[0-9][0-9]",
    "/usr/local/bin/python3",
    "/usr/local/bin/python3.[0-9]",
    "/usr/local/bin/python3.[0-9][0-9]",
    "/opt/conda/bin/python3",
)
# The console line (and boot.json problem) of a bootstrap that refused what it downloaded: its SHA-256 is not the one
# in the user data. The console output is the instance's own: no other instance can write it.
REFUSED_MARKER = "grid-resume: refused to start"
REFUSED_EXIT = 79
# The console line that says the image has no python3 3.9+ (the run trigger looks for it when no boot.json says so).
NO_PYTHON_MARKER = "grid-resume: no usable Python on this image"
NO_PYTHON = (
    NO_PYTHON_MARKER + ": the agent needs python3 >= 3.9 (found: ${SEEN:-none}). "
    "This is a problem of the image, not of the script: use an image with python3 3.9+ (Amazon Linux 2023, "
    "Ubuntu 22.04+, Debian 11+, the Deep Learning AMIs), or install python3 in it"
)


def launcher_source() -> str:
    """The Python half of the user data (ec2/bootpy.py): standard library only, Python 3.6+ syntax. Without its
    comments and docstrings (the same code, unparsed), which leaves the user data room for a long run URI."""
    tree = ast.parse((Path(__file__).parent / "bootpy.py").read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.FunctionDef)) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def render_user_data(
    run_uri: str,
    session: int,
    region: str | None,
    *,
    agent_sha256: str | None = None,
    spec_sha256: str | None = None,
) -> str:
    """The bootstrap script. ``GRID_RESUME_HOME`` and ``GRID_RESUME_NO_SHUTDOWN`` let the local
    spot cloud run the very same script as an unprivileged local process. With ``agent_sha256`` and
    ``spec_sha256`` the bootstrap runs only the agent and spec of those digests (None: a launch by a
    trigger serialized before digests existed, which checks nothing)."""
    for name, digest in (("agent_sha256", agent_sha256), ("spec_sha256", spec_sha256)):
        if digest is not None and not _SHA256.fullmatch(digest):
            raise ValueError(f"{name} must be 64 lowercase hex characters, got {digest!r}")
    doc = {"run_uri": run_uri, "session": session, "region": region}
    if agent_sha256 or spec_sha256:
        doc.update(agent_sha256=agent_sha256, spec_sha256=spec_sha256)
    header = json.dumps(doc, sort_keys=True)
    region_line = f'export AWS_DEFAULT_REGION="${{AWS_DEFAULT_REGION:-{region}}}"\n' if region else ""
    run_args = f'"$GRID_RESUME_RUN" {int(session)}'  # the URI once in the script: it can be 1 KB long
    digests = f"{agent_sha256 or '-'} {spec_sha256 or '-'}"
    script = (
        "#!/bin/bash\n"
        f"{MARKER}{header}\n"
        "set -uo pipefail\n"
        f"GRID_RESUME_RUN={shlex.quote(run_uri)}\n"
        'export GRID_RESUME_HOME="${GRID_RESUME_HOME:-/var/lib/grid-resume}"\n'
        f"{region_line}"
        'mkdir -p "$GRID_RESUME_HOME/work" && cd "$GRID_RESUME_HOME"\n'
        f"cat > launcher.py <<'GRID_RESUME_PY'\n{launcher_source().strip()}\nGRID_RESUME_PY\n"
        "# The agent needs python3 >= 3.9 and nothing else (its libraries travel in its zipapp).\n"
        "PY= OLD= SEEN=\n"
        f"for c in ${{GRID_RESUME_PYTHONS:-{' '.join(CANDIDATES)}}}; do\n"
        '  [ -n "$c" ] && [ -x "$c" ] && [ -f "$c" ] || continue\n'
        '  v=$("$c" -c \'import sys; print("%d.%d.%d" % sys.version_info[:3])\' 2>/dev/null) || continue\n'
        '  case ", $SEEN, " in *", $c ("*) continue;; esac\n'
        '  SEEN="${SEEN:+$SEEN, }$c ($v)"\n'
        "  if \"$c\" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then PY=$c; break; fi\n"
        '  [ -n "$OLD" ] || ! "$c" -c \'import sys; sys.exit(sys.version_info < (3, 6))\' 2>/dev/null || OLD=$c\n'
        "done\n"
        'if [ -n "$PY" ]; then\n'
        '  echo "grid-resume: starting the agent with $PY (python3 candidates: $SEEN)"\n'
        f'  "$PY" launcher.py run {run_args} {AGENT_KEY} {SPEC_KEY} "$SEEN" {digests}\n'
        "  status=$?\n"
        "else\n"
        f'  msg="{NO_PYTHON}"\n'
        '  echo "$msg" >&2; status=78\n'
        "  # An older python3 can still write the problem to the ledger, where the Airflow side reads it.\n"
        f'  if [ -n "$OLD" ]; then "$OLD" launcher.py report {run_args} {SPEC_KEY} "$SEEN" "$msg"; fi\n'
        "fi\n"
        "# The session is over: power off, which terminates the instance (shutdown behaviour terminate).\n"
        'if [ "${GRID_RESUME_NO_SHUTDOWN:-0}" != 1 ]; then shutdown -h now; fi\n'
        "exit $status\n"
    )
    if len(script.encode()) > USER_DATA_LIMIT:
        raise ValueError(f"user data is {len(script.encode())} bytes; EC2 allows 16 KB before base64 encoding")
    return script


def parse_marker(user_data: str) -> dict | None:
    """The header of a grid-resume bootstrap, or None for any other user data."""
    for line in user_data.splitlines()[:3]:
        if line.startswith(MARKER):
            try:
                doc = json.loads(line[len(MARKER) :])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None
