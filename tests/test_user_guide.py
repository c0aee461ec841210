"""The user guide's examples, as printed, through ``grid-resume verify``: each must be RESUMABLE.

The code blocks are read from docs/user-guide.md (the first ``python`` block under each example's heading) and
run at a small size set through the environment variables the examples read (``STEPS``, ``SAMPLES``,
``WORKERS``). torch and Lightning come from the project's ``examples`` extra.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).parent.parent / "docs" / "user-guide.md"

# heading -> (sizes, the final outputs verify compares)
EXAMPLES = {
    "Plain Python": ({"STEPS": "1500000"}, ["result.json"]),
    "PyTorch": ({"STEPS": "100", "SAMPLES": "6400", "WORKERS": "1"}, ["model-final.pt"]),
    "PyTorch Lightning": ({"STEPS": "100", "SAMPLES": "6400", "WORKERS": "0"}, ["model-final.ckpt"]),
}


def example(heading: str) -> str:
    """The first python code block under ``### heading`` in the guide."""
    text = GUIDE.read_text()
    section = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#{{2,3}} )", text, re.MULTILINE | re.DOTALL)
    assert section, f"no section '### {heading}' in {GUIDE}"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block, f"no python block under '### {heading}'"
    return block.group(1)


@pytest.mark.timeout(900)  # three torch processes start per example: slow on a loaded 2-core machine
@pytest.mark.parametrize("heading", list(EXAMPLES))
def test_the_guides_example_is_resumable(heading: str, tmp_path: Path) -> None:
    sizes, outputs = EXAMPLES[heading]
    workdir, scratch = tmp_path / "project", tmp_path / "scratch"
    workdir.mkdir()
    scratch.mkdir()
    (workdir / "train.py").write_text(example(heading))
    # One thread: on a shared 2-core machine torch's thread pool spins; every session uses the same, so the
    # bit-exact comparison holds.
    env = {**os.environ, **sizes, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch), "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "airflow_grid_resume.cli", "verify", "--workdir", str(workdir),
            "--interruptions", "1", "--seed", "11", "--notice-seconds", "30"]  # fmt: skip
    for glob in outputs:
        argv += ["--outputs", glob]
    proc = subprocess.run(
        [*argv, "--", sys.executable, "train.py"], capture_output=True, text=True, env=env, timeout=600
    )
    report = proc.stdout
    assert proc.returncode == 0, report + proc.stderr[-3000:]
    assert "verdict: RESUMABLE (exit 0)" in report, report
    assert "[PASS] sigterm: exits 0 on SIGTERM" in report, report
    assert "[PASS] resume: resumes from its checkpoint" in report, report  # counted in progress steps
    assert f"[PASS] outputs: {len(outputs)} output files match the reference" in report, report
    assert re.search(r"session 2 +restored 000001-", report), report  # really interrupted and resumed
    assert list(scratch.iterdir()) == []
