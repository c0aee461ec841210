"""A two-file checkpoint: every step replaces a.json, then (after a pause) b.json, each by rename, both
carrying the step; with --marker it prints ``grid-resume: checkpoint`` once both are written (and once at
the start: the restored pair is complete). At the start it refuses a torn pair (exit 3). On SIGTERM it
finishes the step and exits 0. Usage: pair_train.py STEPS PAUSE [--marker]"""

import json
import os
import signal
import sys
import time

steps, pause = int(sys.argv[1]), float(sys.argv[2])
marker = "--marker" in sys.argv
stop = False
if os.environ.get("PAIR_PIDFILE"):
    with open(os.environ["PAIR_PIDFILE"], "w") as fh:
        fh.write(str(os.getpid()))


def handle(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, handle)


def read(name):
    try:
        with open(name) as fh:
            return json.load(fh)["step"]
    except FileNotFoundError:
        return None


def write(name, step):
    with open(name + ".tmp", "w") as fh:
        json.dump({"step": step, "pad": "x" * 2000}, fh)
    os.replace(name + ".tmp", name)


a, b = read("a.json"), read("b.json")
if a != b:
    print(f"TORN CHECKPOINT a={a} b={b}", flush=True)
    sys.exit(3)
step = a or 0
print(f"resumed from step {step}", flush=True)
if marker:
    print("grid-resume: checkpoint", flush=True)
while step < steps and not stop:
    step += 1
    write("a.json", step)
    time.sleep(pause)
    write("b.json", step)
    if marker:
        print(f"[train] step {step} saved. grid-resume: checkpoint", flush=True)
    print(f"grid-resume: progress {step}/{steps}", flush=True)
    time.sleep(pause * 0.7)
