"""The user guide's examples, as printed, through ``grid-resume verify``: each must be RESUMABLE.

The code blocks are read from docs/user-guide.md (the first ``python`` block under each example's heading) and
run at a small size set through the environment variables the examples read (``STEPS``, ``SAMPLES``,
``WORKERS``). torch and Lightning come from the project's ``examples`` extra.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

GUIDE = Path(__file__).parent.parent / "docs" / "user-guide.md"

# heading -> (sizes, the final outputs verify compares)
EXAMPLES = {
    "Plain Python": ({"STEPS": "1500000"}, ["result.json"]),
    "PyTorch": ({"STEPS": "300", "SAMPLES": "12800", "WORKERS": "1"}, ["model-final.pt"]),
    "PyTorch Lightning": ({"STEPS": "300", "SAMPLES": "12800", "WORKERS": "0"}, ["model-final.ckpt"]),
}
# The line of the Lightning example that makes a mid-epoch resume exact: without it the resumed epoch trains on
# batches it already trained on, and the final weights differ.
LIGHTNING_SKIP = "        self.sampler.skip = max(0, done) * BATCH\n"


def example(heading: str) -> str:
    """The first python code block under ``### heading`` in the guide."""
    text = GUIDE.read_text()
    section = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#{{2,3}} )", text, re.MULTILINE | re.DOTALL)
    assert section, f"no section '### {heading}' in {GUIDE}"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block, f"no python block under '### {heading}'"
    return block.group(1)


def run_verify(script: str, sizes: dict, outputs: list[str], tmp_path: Path, request: pytest.FixtureRequest) -> tuple:
    """``grid-resume verify`` on ``script`` as train.py in a fresh project directory: (exit code, report)."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    # A short TMPDIR of its own: the command gets it back from verify's probe, and multiprocessing's sockets under
    # pytest's deep tmp_path would exceed AF_UNIX's path limit.
    scratch = Path(tempfile.mkdtemp(prefix="guide-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    (workdir / "train.py").write_text(script)
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
    assert list(scratch.glob("grid-resume-*")) == []  # verify's and its agents' temporary directories are gone
    return proc.returncode, proc.stdout + proc.stderr[-3000:]


@pytest.mark.timeout(900)  # three torch processes start per example: slow on a loaded 2-core machine
@pytest.mark.parametrize("heading", list(EXAMPLES))
def test_the_guides_example_is_resumable(heading: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sizes, outputs = EXAMPLES[heading]
    code, report = run_verify(example(heading), sizes, outputs, tmp_path, request)
    assert code == 0, report
    assert "verdict: RESUMABLE (exit 0)" in report, report
    assert "[PASS] sigterm: exits 0 on SIGTERM" in report, report
    assert "[PASS] resume: resumes from its checkpoint" in report, report  # counted in progress steps
    assert f"[PASS] outputs: {len(outputs)} output files match the reference: " in report, report
    assert re.search(r"session 2 +restored 000001-", report), report  # really interrupted and resumed
    # The examples print checkpoint markers after each save: captured, committed, and resumed from.
    assert "[PASS] markers: " in report and "every resumed session restored a complete checkpoint" in report, report
    if heading == "PyTorch Lightning":
        # A whole trainer checkpoint: other bytes after a resume, the same content, compared tensor by tensor.
        assert "[PASS] outputs: 1 output files match the reference: model-final.ckpt (by content)" in report, report
        assert "model-final.ckpt: the same content: " in report, report
        assert re.search(r"ignored \(Lightning loop progress counters\): \d+ values, ", report), report
        assert re.search(r"the same content: [1-9]\d* tensors and [1-9]\d* other values compared exactly", report)


@pytest.mark.timeout(900)
def test_a_lightning_resume_that_changes_the_weights_is_named(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # The guide's Lightning example without its skip of the batches already trained: after the resume the epoch
    # starts over and trains on them again. The trainer checkpoint's bookkeeping may be ignored; this may not.
    script = example("PyTorch Lightning")
    assert LIGHTNING_SKIP in script
    sizes, outputs = EXAMPLES["PyTorch Lightning"]
    code, report = run_verify(script.replace(LIGHTNING_SKIP, ""), sizes, outputs, tmp_path, request)
    assert code == 1, report
    assert "verdict: NOT RESUMABLE (outputs) (exit 1)" in report, report
    assert "[FAIL] outputs: the final outputs differ from the reference's: model-final.ckpt" in report, report
    assert re.search(
        r"differs: model-final\.ckpt: first difference at \['state_dict'\]\['net\.\d\.(weight|bias)'\]: "
        r"\d+ of \d+ values differ \(largest difference ", report
    ), report  # fmt: skip
    assert "keys differ in all; next: " in report, report  # the optimizer's state differs too, and is listed
