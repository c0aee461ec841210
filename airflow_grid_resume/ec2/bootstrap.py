"""The instance's user data: fetch the agent and the run spec from the ledger, start the agent.

It holds no credentials and no secrets (the instance profile grants access to the run prefix),
only the run's URI, the session number and the region, and stays far below EC2's 16 KB limit.
The agent runs in Python's UTF-8 mode (``-X utf8``), so file names map to manifest paths the same
way whatever the image's locale (docs/ledger.md, "Paths").
"""

from __future__ import annotations

import json
import shlex

from airflow_grid_resume.ledger import layout

MARKER = "# grid-resume bootstrap v1 "
USER_DATA_LIMIT = 16 * 1024
AGENT_KEY = layout.AGENT_ZIPAPP
SPEC_KEY = layout.SPEC

_LAUNCHER = r"""
import json, os, sys
import boto3
run_uri, session = sys.argv[1], sys.argv[2]
bucket, _, prefix = run_uri[len("s3://"):].partition("/")
key = lambda name: f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name
home = os.environ["GRID_RESUME_HOME"]
s3 = boto3.client("s3")
s3.download_file(bucket, key("%(agent_key)s"), os.path.join(home, "agent.pyz"))
spec = json.loads(s3.get_object(Bucket=bucket, Key=key("%(spec_key)s"))["Body"].read())
argv = [sys.executable, "-X", "utf8", os.path.join(home, "agent.pyz"), "--run-uri", run_uri,
        "--workdir", os.path.join(home, "work"), "--session", session,
        *(["--live-queue", spec["live_queue"]] if spec.get("live_queue") else []),
        *spec.get("agent_args", []), "--", *spec["command"]]
sys.stdout.flush()
os.execv(sys.executable, argv)
"""


def render_user_data(run_uri: str, session: int, region: str | None) -> str:
    """The bootstrap script. ``GRID_RESUME_HOME`` and ``GRID_RESUME_NO_SHUTDOWN`` let the local
    spot cloud run the very same script as an unprivileged local process."""
    header = json.dumps({"run_uri": run_uri, "session": session, "region": region}, sort_keys=True)
    launcher = _LAUNCHER % {"agent_key": AGENT_KEY, "spec_key": SPEC_KEY}
    region_line = f'export AWS_DEFAULT_REGION="${{AWS_DEFAULT_REGION:-{region}}}"\n' if region else ""
    script = (
        "#!/bin/bash\n"
        f"{MARKER}{header}\n"
        "set -uo pipefail\n"
        'export GRID_RESUME_HOME="${GRID_RESUME_HOME:-/var/lib/grid-resume}"\n'
        f"{region_line}"
        'mkdir -p "$GRID_RESUME_HOME/work" && cd "$GRID_RESUME_HOME"\n'
        "# The agent needs Python 3.10+ with boto3: the first interpreter on the image that has both.\n"
        "PY=\n"
        "for c in python3 python3.13 python3.12 python3.11 python3.10; do\n"
        '  if command -v "$c" >/dev/null && "$c" -c "import sys, boto3; sys.exit(sys.version_info < (3, 10))"'
        " 2>/dev/null; then PY=$c; break; fi\n"
        "done\n"
        'if [ -z "$PY" ]; then\n'
        '  echo "grid-resume: no python3 >= 3.10 with boto3 on this image: the agent cannot start" >&2; status=78\n'
        "else\n"
        f"\"$PY\" - {shlex.quote(run_uri)} {int(session)} <<'GRID_RESUME_PY'\n"
        f"{launcher.strip()}\n"
        "GRID_RESUME_PY\n"
        "status=$?\n"
        "fi\n"
        "# The session is over: power off, which terminates the instance (shutdown behaviour terminate).\n"
        'if [ "${GRID_RESUME_NO_SHUTDOWN:-0}" != 1 ]; then shutdown -h now; fi\n'
        "exit $status\n"
    )
    if len(script.encode()) > USER_DATA_LIMIT * 3 // 4:  # base64 grows it by a third
        raise ValueError(f"user data is {len(script)} bytes; EC2 allows 16 KB after base64 encoding")
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
