"""Train the sigedge embedder: float pre-training, then quantization-aware fine-tuning.

    TF_USE_LEGACY_KERAS=1 python -m training.train_embedder --out runs/embedder

Writer-disjoint split (training/data.py, fixed seed). Objective: CosFace margin softmax
over identities (SigComp/SSBI writers, their forgeries as separate classes, cross-media
(writer, name) pairs), batches balanced across collections. Every epoch writes a
checkpoint; ``--resume`` continues from the last one. The run ends with ``qat.h5`` (the
QAT model's weights) that ``python -m export.export_embedder`` turns into int8 TFLite.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.normalize import NormalizeOptions  # noqa: E402
from sigedge.scoring import l2_normalize  # noqa: E402
from training import data as D  # noqa: E402
from training.augment import augment, refit  # noqa: E402
from training.model import CosFaceHead, build_embedder, quantize_aware  # noqa: E402

log = logging.getLogger("train_embedder")

#: Cached canvases are larger than the model input so augmentation has detail to work on.
CACHE_OPTS = NormalizeOptions(height=192, width=384, margin=0.02)
DATASET_WEIGHTS = {"sigcomp2011_dutch": 0.35, "ssbi": 0.2, "cross_media_chinese": 0.45}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=D.DEFAULT_DATA_ROOT)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sigedge-train")
    p.add_argument("--epochs", type=int, default=30, help="float epochs")
    p.add_argument("--qat-epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100, help="steps per epoch")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="use only N samples (smoke tests)")
    return p.parse_args(argv)


class BatchMaker:
    """Augmented batches made in a background thread (OpenCV releases the GIL)."""

    def __init__(self, canvases, labels, weights, batch, hw, seed, prefetch=6):
        self.canvases, self.labels, self.batch, self.hw = canvases, labels, batch, hw
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.q: queue.Queue = queue.Queue(prefetch)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            idx = self.rng.choice(len(self.labels), size=self.batch, p=self.p)
            x = np.stack([augment(self.canvases[i], self.rng, self.hw) for i in idx]).astype(np.float32) / 255.0
            self.q.put((x[..., None], self.labels[idx].astype(np.int32)))

    def next(self):
        return self.q.get()

    def close(self):
        self.stop = True
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass


def embed(model, canvases: np.ndarray, batch: int = 128) -> np.ndarray:
    out = [model(canvases[i : i + batch, ..., None].astype(np.float32) / 255.0, training=False).numpy()
           for i in range(0, len(canvases), batch)]
    return l2_normalize(np.concatenate(out))


def validate(model, val_sets) -> dict:
    res = {}
    for name, (canv, writers, kinds) in val_sets.items():
        refs = D.EVAL_REFERENCES[name]
        rep = report_from_scores(protocol_scores(embed(model, canv), writers, kinds, references=refs, seed=0), refs)
        res[name] = {"eer_skilled": rep.eer_skilled, "eer_random": rep.eer_random}
    return res


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tf.keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    hw = (args.height, args.width)

    samples = D.load_all(args.data)
    train_writers, val_writers = D.split_writers(samples)
    train = [s for s in samples if s.writer in train_writers]
    val = [s for s in samples if s.writer in val_writers]
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train = [train[i] for i in sorted(rng.choice(len(train), args.limit, replace=False))]
        val = [s for s in val if s.dataset == "sigcomp2011_dutch"][: args.limit]
    identities = sorted({s.identity for s in train})
    ident_index = {k: i for i, k in enumerate(identities)}
    labels = np.array([ident_index[s.identity] for s in train])
    counts = {ds: sum(s.dataset == ds for s in train) for ds in DATASET_WEIGHTS}
    weights = np.array([DATASET_WEIGHTS[s.dataset] / counts[s.dataset] for s in train])
    log.info("train: %d samples, %d identities; val: %d samples", len(train), len(identities), len(val))

    t0 = time.time()
    train_canv = D.preprocess(train, CACHE_OPTS, args.cache)
    log.info("preprocessed train in %.0fs", time.time() - t0)
    val_opts = NormalizeOptions(height=args.height, width=args.width)
    val_sets = {}
    for ds in ("sigcomp2011_dutch", "ssbi", "cross_media_chinese"):
        vs = [s for s in val if s.dataset == ds]
        if len({s.writer for s in vs}) >= 2:
            key = (lambda s: s.identity) if ds == "cross_media_chinese" else (lambda s: s.writer)
            val_sets[ds] = (D.preprocess(vs, val_opts, args.cache), [key(s) for s in vs], [s.kind for s in vs])

    model = build_embedder(args.height, args.width, args.alpha, args.dim)
    head = CosFaceHead(args.dim, len(identities), seed=args.seed)
    state_path = args.out / "state.json"
    state = {"epoch": 0, "phase": "float", "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        log.info("resuming from epoch %d (%s)", state["epoch"], state["phase"])

    total_float = args.epochs * args.steps

    def float_lr(global_step: int) -> float:
        # Short linear warm-up, then cosine decay to 5 % of the peak.
        warm = max(1, args.steps)
        if global_step < warm:
            return args.lr * (global_step + 1) / warm
        t = min(1.0, (global_step - warm) / max(1, total_float - warm))
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t)))

    def make_step(m, opt):
        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                emb = m(x, training=True)
                logits = head.logits(emb, y)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
                loss += tf.add_n(m.losses) if m.losses else 0.0
            vars_ = m.trainable_variables + [head.w]
            grads = tape.gradient(loss, vars_)
            opt.apply_gradients(zip(grads, vars_))
            acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
            return loss, acc
        return step

    maker = BatchMaker(train_canv, labels, weights, args.batch, hw, args.seed + state["epoch"])
    try:
        if state["phase"] == "float":
            if state["epoch"] > 0:
                model.load_weights(args.out / "float.h5")
                head.w.assign(np.load(args.out / "head.npy"))
            opt = tf.keras.optimizers.Adam(args.lr)
            step = make_step(model, opt)
            for epoch in range(state["epoch"], args.epochs):
                run_epoch(step, maker, args.steps, epoch, "float", opt, float_lr)
                model.save_weights(args.out / "float.h5")
                np.save(args.out / "head.npy", head.w.numpy())
                metrics = validate(model, val_sets)
                state.update(epoch=epoch + 1)
                state["history"].append({"phase": "float", "epoch": epoch + 1, **flat(metrics)})
                state_path.write_text(json.dumps(state, indent=1))
                log.info("epoch %d val %s", epoch + 1, metrics)
            state.update(phase="qat", epoch=0)
            state_path.write_text(json.dumps(state, indent=1))
        # Quantization-aware fine-tuning from the float weights, at a low learning rate.
        model.load_weights(args.out / "float.h5")
        head.w.assign(np.load(args.out / "head.npy"))
        qat = quantize_aware(model)
        if state["epoch"] > 0:
            qat.load_weights(args.out / "qat.h5")
        opt = tf.keras.optimizers.Adam(args.lr * 0.02)
        step = make_step(qat, opt)
        for epoch in range(state["epoch"], args.qat_epochs):
            run_epoch(step, maker, args.steps, epoch, "qat", opt, lambda _: args.lr * 0.02)
            qat.save_weights(args.out / "qat.h5")
            metrics = validate(qat, val_sets)
            state.update(epoch=epoch + 1)
            state["history"].append({"phase": "qat", "epoch": epoch + 1, **flat(metrics)})
            state_path.write_text(json.dumps(state, indent=1))
            log.info("qat epoch %d val %s", epoch + 1, metrics)
        if args.qat_epochs == 0:
            qat.save_weights(args.out / "qat.h5")
        state["phase"] = "done"
        state["config"] = {k: str(v) for k, v in vars(args).items()}
        state_path.write_text(json.dumps(state, indent=1))
    finally:
        maker.close()


def flat(metrics: dict) -> dict:
    return {f"{ds}_{k}": v for ds, m in metrics.items() for k, v in m.items()}


def run_epoch(step, maker, steps, epoch, phase, opt, lr_fn):
    t = time.time()
    losses, accs = [], []
    for k in range(steps):
        opt.learning_rate.assign(lr_fn(epoch * steps + k))
        x, y = maker.next()
        loss, acc = step(tf.constant(x), tf.constant(y))
        losses.append(float(loss))
        accs.append(float(acc))
    n = steps * maker.batch
    log.info("%s epoch %d: loss %.3f acc %.3f, %.0f img/s", phase, epoch + 1, np.mean(losses), np.mean(accs),
             n / (time.time() - t))


if __name__ == "__main__":
    main()
