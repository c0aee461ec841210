"""The body shared by the verify test scripts: a small deterministic "training" loop whose flaws
each script chooses. ``SCRIPT [TOTAL_STEPS] [STEP_SECONDS] [protocol]``.

It prints ``step N`` after each completed step (and ``grid-resume: progress N/TOTAL`` with
``protocol``), keeps its state in ``ckpt.json``, appends to ``events.log`` (a log that changes at
every sync) and writes ``result.txt`` (a running sha256 over the steps: the same however often the
run is interrupted, if no step is lost or redone wrongly) and ``config.json`` at the end.
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

# A helper process that ignores SIGTERM too (a data-loader worker that does), until its parent is gone.
IGNORING_CHILD = "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.stdin.read()"


def run(
    *,
    on_sigterm: str = "save",  # save: flag, save, exit 0 | exit: exit 0 at once | ignore | default (dies, 143)
    resume: bool = True,
    atomic: bool = True,
    save_every: int = 5,
    slow_write: float = 0.0,  # seconds a checkpoint write takes (half written, then the rest)
    reseed_on_start: bool = False,  # an RNG that is not in the checkpoint: results depend on the resume points
    ignoring_child: bool = False,  # start a child that ignores SIGTERM as well
    hang_on_resume: bool = False,  # after a resume, wait forever (a deadlock), SIGTERM or not
    record_cwd: bool = False,  # write the absolute working directory into config.json (as Lightning does)
    record_session: bool = False,  # write the session number into config.json (bookkeeping a comparator ignores)
) -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    step_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    protocol = len(sys.argv) > 3 and sys.argv[3] == "protocol"
    stop = []
    if on_sigterm == "save":
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    elif on_sigterm == "exit":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    elif on_sigterm == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def save(state: dict) -> None:
        data = json.dumps(state).encode()
        target = "ckpt.json.tmp" if atomic else "ckpt.json"
        with open(target, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(slow_write)
            fh.write(data[len(data) // 2 :])
            fh.flush()
            os.fsync(fh.fileno())
        if atomic:
            os.replace(target, "ckpt.json")

    state = {"step": 0, "acc": ""}
    if resume and os.path.exists("ckpt.json"):
        with open("ckpt.json") as fh:
            state = json.load(fh)
        print(f"resumed at step {state['step']}", flush=True)
        if hang_on_resume:
            while True:
                time.sleep(1)
    child = subprocess.Popen([sys.executable, "-c", IGNORING_CHILD], stdin=subprocess.PIPE) if ignoring_child else None
    rng = random.Random(7)
    with open("events.log", "a") as fh:
        fh.write(f"session {os.environ.get('GRID_RESUME_SESSION')} started at step {state['step']}\n")
    while state["step"] < total:
        if stop:
            save(state)
            print(f"saved at step {state['step']} and exiting", flush=True)
            sys.exit(0)
        time.sleep(step_seconds)
        noise = f":{rng.random()}" if reseed_on_start else ""
        state["acc"] = hashlib.sha256(f"{state['acc']}:{state['step']}{noise}".encode()).hexdigest()
        state["step"] += 1
        print(f"step {state['step']}", flush=True)
        if protocol:
            print(f"grid-resume: progress {state['step']}/{total}", flush=True)
        if state["step"] % save_every == 0:
            save(state)
    save(state)
    with open("result.txt", "w") as fh:
        fh.write(state["acc"] + "\n")
    with open("config.json", "w") as fh:
        extra = {"cwd": os.getcwd()} if record_cwd else {}
        if record_session:
            extra["session"] = os.environ.get("GRID_RESUME_SESSION")
        json.dump({"total": total, **extra}, fh)
    if child is not None:
        child.stdin.close()
        child.wait()
    print("done", flush=True)
