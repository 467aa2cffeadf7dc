"""Training speed of the embedder's step with and without TensorFlow's oneDNN CPU kernels.

    python benchmarks/train_speed.py --out benchmarks/results/train-speed.json

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, at import, so each setting runs in its own
child process, one after the other, alternating, ``--rounds`` times each: the shipped
recipe's float training step (MobileNetV2 alpha 0.35 on 128x256, batch 64, CosFace head)
and its quantization-aware step, on random images after two warm-up steps. Reports
images a second per setting (mean over rounds) and the ratio on/off. The step is the
CosFace part only (no ranking loss; augmentation runs in its own thread in training): it
measures the kernels, not an epoch. ``training/``
turns oneDNN on by default because of this measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import os, sys, time, json
sys.path.insert(0, {root!r})
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
from training.model import CosFaceHead, build_embedder, quantize_aware

tf.keras.utils.set_random_seed(0)
batch, steps = {batch}, {steps}
float_model = build_embedder(128, 256, 0.35, 128)
head = CosFaceHead(128, 981)
x = tf.constant(np.random.default_rng(0).random((batch, 128, 256, 1), dtype=np.float32))
y = tf.constant(np.random.default_rng(1).integers(0, 981, batch).astype(np.int32))
out = {{}}
for phase, model in (("float", float_model), ("qat", None)):
    model = model or quantize_aware(float_model)
    opt = tf.keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = head.logits(model(x, training=True), y)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        variables = model.trainable_variables + [head.w]
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for _ in range(2):
        float(step(x, y))
    t = time.perf_counter()
    for _ in range(steps):
        float(step(x, y))
    out[phase] = steps * batch / (time.perf_counter() - t)
out["tensorflow"] = tf.__version__
print("RESULT " + json.dumps(out))
"""


def run_child(onednn: bool, batch: int, steps: int) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), batch=batch, steps=steps)],
                          env=env, capture_output=True, text=True, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def means(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {name: {phase: float(statistics.mean(x[phase] for x in rs)) for phase in ("float", "qat")}
            for name, rs in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
            runs[name].append(run_child(name == "on", args.batch, args.steps))
            print(f"round {r + 1} oneDNN {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    versions = sorted({r.pop("tensorflow") for rs in runs.values() for r in rs})  # as the children saw it
    mean = means(runs)
    report = {
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"), "tensorflow": ", ".join(versions), "machine": platform.machine(),
        "cpus": os.cpu_count(), "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "img_per_s": runs, "mean_img_per_s": mean,
        "ratio_on_over_off": {p: mean["on"][p] / mean["off"][p] for p in ("float", "qat")},
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
