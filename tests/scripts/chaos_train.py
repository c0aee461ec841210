"""The chaos simulation's training script: deterministic, checkpointed every few steps and on SIGTERM,
with a line per step that names its session (so the task log can be checked line by line) and the
progress protocol. Usage: chaos_train.py TOTAL_STEPS STEP_SECONDS SAVE_EVERY"""

import hashlib
import json
import os
import signal
import sys
import time

total, step_seconds, save_every = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
session = os.environ.get("GRID_RESUME_SESSION", "?")
stop = False


def handle(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, handle)


def save(state):
    with open("ckpt.json.tmp", "w") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace("ckpt.json.tmp", "ckpt.json")


state = {"step": 0, "acc": ""}
if os.path.exists("ckpt.json"):
    with open("ckpt.json") as fh:
        state = json.load(fh)
while state["step"] < total:
    if stop:
        save(state)
        sys.exit(0)
    time.sleep(step_seconds)
    state["acc"] = hashlib.sha256(f"{state['acc']}:{state['step']}".encode()).hexdigest()
    state["step"] += 1
    print(f"CHAOS-LINE s={session} step={state['step']};", flush=True)
    print(f"grid-resume: progress {state['step']}/{total}", flush=True)
    if state["step"] % save_every == 0:
        save(state)
save(state)
with open("result.txt", "w") as fh:
    fh.write(state["acc"] + "\n")
