"""Train a small neural network on handwritten digits, resumably.

The data set (1,797 8x8 images of digits, the UCI "optdigits" test set) ships inside scikit-learn,
so nothing is fetched. The model is a 64-32-10 multilayer perceptron trained with minibatch SGD in
numpy. Everything a resumed run needs is in the checkpoint: weights, step, and the minibatch
sampler's RNG state, so an interrupted run ends with exactly the same weights and accuracy as an
uninterrupted one. The checkpoint is written atomically (temporary file, fsync, rename) every
``--save-every`` steps and when SIGTERM arrives, and the script then exits 0.

Usage: train.py [--steps N] [--step-seconds S] [--save-every N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread: bit-identical sums, session after session

import numpy as np
from sklearn.datasets import load_digits

CHECKPOINT = "checkpoint.npz"
stop_requested = False


def on_sigterm(signum: int, frame: object) -> None:
    global stop_requested
    stop_requested = True


def save(params: dict[str, np.ndarray], step: int, rng: np.random.Generator) -> None:
    tmp = CHECKPOINT + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, step=step, rng=json.dumps(rng.bit_generator.state), **params)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, CHECKPOINT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--save-every", type=int, default=20)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x, y = digits.data[order] / 16.0, digits.target[order]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    if os.path.exists(CHECKPOINT):
        with np.load(CHECKPOINT) as ckpt:
            params = {k: ckpt[k] for k in ("w1", "b1", "w2", "b2")}
            step = int(ckpt["step"])
            rng = np.random.default_rng()
            rng.bit_generator.state = json.loads(str(ckpt["rng"]))
        print(f"resumed from checkpoint at step {step}", flush=True)
    else:
        init = np.random.default_rng(42)
        params = {
            "w1": init.normal(0, 0.1, (64, 32)),
            "b1": np.zeros(32),
            "w2": init.normal(0, 0.1, (32, 10)),
            "b2": np.zeros(10),
        }
        step, rng = 0, np.random.default_rng(7)
        print(f"fresh start: {len(y_train)} training images, {len(y_test)} test images", flush=True)

    while step < args.steps:
        if stop_requested:
            save(params, step, rng)
            print(f"SIGTERM: checkpoint saved at step {step}, exiting", flush=True)
            return 0
        batch = rng.integers(0, len(y_train), 32)
        xb, yb = x_train[batch], y_train[batch]
        hidden = np.maximum(0, xb @ params["w1"] + params["b1"])
        logits = hidden @ params["w2"] + params["b2"]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        loss = -np.log(probs[np.arange(len(yb)), yb] + 1e-12).mean()
        grad = probs
        grad[np.arange(len(yb)), yb] -= 1
        grad /= len(yb)
        d_hidden = (grad @ params["w2"].T) * (hidden > 0)
        params["w2"] -= 0.5 * hidden.T @ grad
        params["b2"] -= 0.5 * grad.sum(axis=0)
        params["w1"] -= 0.5 * xb.T @ d_hidden
        params["b1"] -= 0.5 * d_hidden.sum(axis=0)
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {loss:.4f}", flush=True)
            print(f"grid-resume: progress {step}/{args.steps}", flush=True)  # the run view's bar, steps lost
        if step % args.save_every == 0:
            save(params, step, rng)
        time.sleep(args.step_seconds)

    save(params, step, rng)
    hidden = np.maximum(0, x_test @ params["w1"] + params["b1"])
    accuracy = float(((hidden @ params["w2"] + params["b2"]).argmax(axis=1) == y_test).mean())
    with open("metrics.json.tmp", "w") as fh:
        json.dump({"test_accuracy": accuracy, "steps": step, "weights_sum": float(params["w1"].sum())}, fh)
    os.replace("metrics.json.tmp", "metrics.json")
    print(f"done: test accuracy {accuracy:.4f} after {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
