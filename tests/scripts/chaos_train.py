"""The chaos simulation's training script: deterministic, checkpointed every few steps and on SIGTERM,
with a line per step that names its session (so the task log can be checked line by line) and the
progress protocol. Usage: chaos_train.py TOTAL_STEPS STEP_SECONDS SAVE_EVERY [pair]

With ``pair`` the checkpoint is two files, ckpt.json then ckpt-b.json (its step), each replaced by rename most of
a step apart, saved every step and followed by the ``grid-resume: checkpoint`` marker; a resume that finds them
from different steps prints CHAOS-TORN and exits 3."""

import hashlib
import json
import os
import signal
import sys
import time

total, step_seconds, save_every = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
pair = sys.argv[4:] == ["pair"]
session = os.environ.get("GRID_RESUME_SESSION", "?")
stop = False


def handle(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, handle)


def write(name, doc):
    with open(name + ".tmp", "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(name + ".tmp", name)


def save(state, pause=0.0):
    write("ckpt.json", state)
    if pair:
        time.sleep(pause)  # a torn pair on disk for this long
        write("ckpt-b.json", {"step": state["step"]})
        print("grid-resume: checkpoint", flush=True)


state = {"step": 0, "acc": ""}
if os.path.exists("ckpt.json"):
    with open("ckpt.json") as fh:
        state = json.load(fh)
if pair:
    b = None
    if os.path.exists("ckpt-b.json"):
        with open("ckpt-b.json") as fh:
            b = json.load(fh)["step"]
    if b != (state["step"] if os.path.exists("ckpt.json") else None):
        print(f"CHAOS-TORN s={session} a={state['step']} b={b};", flush=True)
        sys.exit(3)
    print("grid-resume: checkpoint", flush=True)  # what was restored is complete
while state["step"] < total:
    if stop:
        save(state)
        sys.exit(0)
    time.sleep(step_seconds * (0.4 if pair else 1.0))
    state["acc"] = hashlib.sha256(f"{state['acc']}:{state['step']}".encode()).hexdigest()
    state["step"] += 1
    print(f"CHAOS-LINE s={session} step={state['step']};", flush=True)
    print(f"grid-resume: progress {state['step']}/{total}", flush=True)
    if pair:
        save(state, pause=step_seconds * 0.6)
    elif state["step"] % save_every == 0:
        save(state)
save(state)
with open("result.txt", "w") as fh:
    fh.write(state["acc"] + "\n")
