"""A small resumable "training" script for the tests: deterministic, checkpointed, SIGTERM-aware.

Usage: train.py TOTAL_STEPS STEP_SECONDS [--save-every N] [--on-sigterm save|ignore|default|fail] [--progress 1]
(``--progress 1``: also print the progress protocol's line, ``grid-resume: progress STEP/TOTAL``, after each step)
State is a running sha256 over the steps, so the final result is the same however often the run
is interrupted, provided no step is lost or repeated wrongly.
"""

import hashlib
import json
import os
import signal
import sys
import time

total, step_seconds = int(sys.argv[1]), float(sys.argv[2])
opts = dict(zip(sys.argv[3::2], sys.argv[4::2], strict=False))
save_every = int(opts.get("--save-every", 5))
on_sigterm = opts.get("--on-sigterm", "save")
session = os.environ.get("GRID_RESUME_SESSION", "?")
stop = False


def handle(signum, frame):
    global stop
    stop = True


if on_sigterm == "save" or on_sigterm == "fail":
    signal.signal(signal.SIGTERM, handle)
elif on_sigterm == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def save(state):
    tmp = "ckpt.json.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, "ckpt.json")


state = {"step": 0, "acc": ""}
if os.path.exists("ckpt.json"):
    with open("ckpt.json") as fh:
        state = json.load(fh)
    print(f"resumed at step {state['step']} in session {session}", flush=True)
else:
    print(f"fresh start in session {session}", flush=True)
with open("pid", "w") as fh:
    fh.write(f"{os.getpid()}\n")
started_at = state["step"]
while state["step"] < total:
    if stop:
        if on_sigterm == "fail":
            print("giving up on SIGTERM", flush=True)
            sys.exit(3)
        save(state)
        with open("history.txt", "a") as fh:
            fh.write(f"session {session}: steps {started_at}-{state['step']} interrupted\n")
        print(f"saved at step {state['step']} and exiting", flush=True)
        sys.exit(0)
    time.sleep(step_seconds)
    state["acc"] = hashlib.sha256(f"{state['acc']}:{state['step']}".encode()).hexdigest()
    state["step"] += 1
    print(f"step {state['step']}", flush=True)
    if opts.get("--progress") == "1":
        print(f"grid-resume: progress {state['step']}/{total}", flush=True)
    if state["step"] % save_every == 0:
        save(state)
save(state)
with open("history.txt", "a") as fh:
    fh.write(f"session {session}: steps {started_at}-{state['step']} done\n")
with open("result.txt", "w") as fh:
    fh.write(state["acc"] + "\n")
print("done", flush=True)
