"""The body shared by the verify test scripts: a small deterministic "training" loop whose flaws
each script chooses. ``SCRIPT [TOTAL_STEPS] [STEP_SECONDS]``.

It prints ``step N`` after each completed step, keeps its state in ``ckpt.json``, appends to
``events.log`` (a log that changes at every sync) and writes ``result.txt`` (a running sha256 over
the steps: the same however often the run is interrupted, if no step is lost or redone wrongly)
and ``config.json`` at the end.
"""

import hashlib
import json
import os
import random
import signal
import sys
import time


def run(
    *,
    on_sigterm: str = "save",  # save: flag, save, exit 0 | exit: exit 0 at once | ignore | default (dies, 143)
    resume: bool = True,
    atomic: bool = True,
    save_every: int = 5,
    slow_write: float = 0.0,  # seconds a checkpoint write takes (half written, then the rest)
    reseed_on_start: bool = False,  # an RNG that is not in the checkpoint: results depend on the resume points
) -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    step_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
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
        if state["step"] % save_every == 0:
            save(state)
    save(state)
    with open("result.txt", "w") as fh:
        fh.write(state["acc"] + "\n")
    with open("config.json", "w") as fh:
        json.dump({"total": total}, fh)
    print("done", flush=True)
