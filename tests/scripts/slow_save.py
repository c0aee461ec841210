"""A trainer whose save on SIGTERM takes a while (a big checkpoint), for the group-deadline tests.

Usage: slow_save.py TOTAL_STEPS STEP_SECONDS SAVE_SECONDS [SAVE_EVERY]
It checkpoints to ckpt.json only every SAVE_EVERY steps (default: never) and on SIGTERM, when the write takes
SAVE_SECONDS (fsynced, renamed into place), then exits 0. Nothing is printed between the SIGTERM and the end of
that save, so a pipe whose reader died (``| tee``) cannot break it before the checkpoint exists.
"""

import json
import os
import signal
import sys
import time

total, step_seconds, save_seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
save_every = int(sys.argv[4]) if len(sys.argv) > 4 else 0
session = os.environ.get("GRID_RESUME_SESSION", "?")
stop = False


def handle(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, handle)


def save(state: dict, seconds: float = 0.0) -> None:
    with open("ckpt.json.tmp", "w") as fh:
        for _ in range(round(seconds / 0.1)):
            fh.write(" " * 1000)  # the slow part of a big checkpoint
            fh.flush()
            time.sleep(0.1)
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace("ckpt.json.tmp", "ckpt.json")


state = {"step": 0}
if os.path.exists("ckpt.json"):
    with open("ckpt.json") as fh:
        state = json.load(fh)
print(f"session {session} starts at step {state['step']}", flush=True)
while state["step"] < total:
    time.sleep(step_seconds)
    if stop:
        save(state, save_seconds)
        print(f"saved at step {state['step']}", flush=True)
        sys.exit(0)
    state["step"] += 1
    print(f"step {state['step']}", flush=True)
    if save_every and state["step"] % save_every == 0:
        save(state)
save(state)
print("done", flush=True)
