"""Train the sigedge signature detector: float training, then quantization-aware fine-tuning.

    TF_USE_LEGACY_KERAS=1 python -m training.train_detector --out runs/detector

Data: the training documents of ``documents_tobacco800`` (page-disjoint split by document,
``training/detector_data.py``, lists in ``training/splits/``) and synthetic pages
(``training/docsynth.py``) carrying real signatures of the embedder's *training* writers.
Batches mix the two; crops are 320x320, the exported model reads 640x640 pages (the
network is fully convolutional). Every epoch checkpoints and measures mAP@0.5 on the
validation documents with the float model; ``--resume`` continues a stopped run.
``python -m export.export_detector`` then writes the int8 TFLite into a bundle.

With ``--ema`` (default 0.998) the weights that are validated, saved as ``float.h5`` /
``qat.h5`` and exported are an exponential moving average of the optimiser's weights
(``float_raw.h5`` / ``qat_raw.h5``, kept for ``--resume``): on some 200 real pages the raw
weights' validation mAP swings by several points from one epoch to the next.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sigedge.detect import decode_heatmap, letterbox, nms  # noqa: E402
from sigedge.detection_metrics import evaluate_detections  # noqa: E402
from training import data as D  # noqa: E402
from training.common import BackgroundBatches, base_parser, recorded_options, warmup_cosine  # noqa: E402
from training import detector_data as DD  # noqa: E402
from training.detector_model import STRIDE, build_detector, detection_loss, quantize_aware  # noqa: E402
from training.docsynth import PAGE_STYLES, PageSynth, SignaturePool  # noqa: E402

log = logging.getLogger("train_detector")

EXPORT_SIZE = 640

#: What a run older than an option trained with, where its state.json recorded nothing:
#: style-1 pages (the only style then) and no moving average of the weights. The retraining
#: command of such a run (export/provenance.training_command) repeats these.
BEFORE_THE_OPTION = {"page_style": "1", "ema": "0.0"}


def parse_args(argv=None):
    p = base_parser(__doc__, epochs=24, qat_epochs=3, batch=16)
    p.add_argument("--crop", type=int, default=320)
    p.add_argument("--synthetic-pages", type=int, default=1200, help="pre-generated synthetic pages")
    p.add_argument("--synthetic-share", type=float, default=0.5, help="share of crops from synthetic pages")
    p.add_argument("--signatures", type=int, default=1500, help="real signatures in the pasting pool")
    p.add_argument("--page-style", type=int, choices=PAGE_STYLES, default=PAGE_STYLES[-1],
                   help="synthetic page layouts (training/docsynth.py PAGE_STYLES; detector v0.1/v0.2 used 1)")
    p.add_argument("--limit", type=int, default=0, help="use only N real pages (smoke tests)")
    p.add_argument("--init", type=Path, default=None, help="start the float phase from these weights (float.h5 "
                   "of an earlier run), e.g. to fine-tune with another data mix")
    p.add_argument("--ema", type=float, default=0.998,
                   help="decay of the moving average of the weights that is validated and exported (0: off)")
    return p.parse_args(argv)


def signature_pool(args) -> SignaturePool:
    """Real signatures (genuine and forged) of the embedder's training writers, cached."""
    cache = args.cache / f"sigpool_{args.signatures}_{args.seed}.npz"
    if cache.exists():
        return SignaturePool.load(cache)
    samples = D.load_all(args.data)
    train_writers, _ = D.split_writers(samples)
    paths = [s.path for s in samples if s.writer in train_writers]
    rng = np.random.default_rng(args.seed)
    chosen = [paths[i] for i in rng.choice(len(paths), min(args.signatures, len(paths)), replace=False)]
    pool = SignaturePool.from_paths(chosen)
    args.cache.mkdir(parents=True, exist_ok=True)
    pool.save(cache)
    return pool


def synthetic_pages(args, pool: SignaturePool, n: int, seed: int, p_empty: float = 0.15) -> list:
    style = getattr(args, "page_style", 1)
    suffix = "" if style == 1 else f"_style{style}"  # style 1 keeps the cache name it was made under
    cache = args.cache / f"docsynth_{n}_{seed}_{len(pool.inks)}_{p_empty}{suffix}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return [(z[f"p{i}"], z[f"b{i}"]) for i in range(n)]
    synth = PageSynth(pool, seed=seed, style=style)
    pages = []
    for i in range(n):
        pages.append(synth.page(EXPORT_SIZE, p_empty=p_empty))
        if i % 200 == 0:
            log.info("synthetic pages %d/%d", i, n)
    np.savez_compressed(cache, **{f"p{i}": p for i, (p, _) in enumerate(pages)},
                        **{f"b{i}": b for i, (_, b) in enumerate(pages)})
    return pages


class CropMaker(BackgroundBatches):
    """Training crops and their targets, made in a background thread."""

    def __init__(self, real, synthetic, synthetic_share, batch, size, seed, prefetch=4):
        self.real, self.synthetic, self.share = real, synthetic, synthetic_share
        self.batch, self.size = batch, size
        self.rng = np.random.default_rng(seed)
        super().__init__(self._batch, prefetch)

    def _one(self):
        r = self.rng
        if self.synthetic and r.random() < self.share:
            page, boxes = self.synthetic[r.integers(len(self.synthetic))]
        else:
            page, boxes = self.real[r.integers(len(self.real))]
            page = DD.photometric(page, r)
        crop, b = DD.random_crop(page, boxes, self.size, r)
        x = 1.0 - crop.astype(np.float32) / 255.0
        return (x[..., None], *DD.make_targets(b, self.size, STRIDE))

    def _batch(self):
        return tuple(np.stack(col) for col in zip(*[self._one() for _ in range(self.batch)]))


class WeightAverage:
    """Exponential moving average of all of a model's float weights (batch-norm statistics too).

    The decay ramps up as (1 + n) / (10 + n) over the first updates so that the random
    initial weights are forgotten quickly; non-float variables (the quantisers' step
    counters) are copied, not averaged.
    """

    def __init__(self, model, decay: float):
        self.model, self.decay = model, decay
        self.shadow = [tf.Variable(w, trainable=False) for w in model.weights]
        self.updates = tf.Variable(0.0, trainable=False)

    def update(self):
        """Called inside the training step (a tf.function)."""
        if self.decay <= 0:
            return
        self.updates.assign_add(1.0)
        d = tf.minimum(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for s, w in zip(self.shadow, self.model.weights):
            if w.dtype.is_floating:
                s.assign(d * s + (1.0 - d) * w)
            else:
                s.assign(w)

    def values(self) -> list:
        return [s.numpy() for s in self.shadow] if self.decay > 0 else self.model.get_weights()

    def reset(self, updates: float = 0.0):
        for s, w in zip(self.shadow, self.model.weights):
            s.assign(w)
        self.updates.assign(updates)

    def save(self, raw_path: Path, averaged_path: Path):
        """Raw weights to ``raw_path`` (for resuming), averaged ones to ``averaged_path``."""
        self.model.save_weights(raw_path)
        raw = self.model.get_weights()
        self.model.set_weights(self.values())
        self.model.save_weights(averaged_path)
        self.model.set_weights(raw)

    def load(self, raw_path: Path, averaged_path: Path):
        self.model.load_weights(averaged_path)
        self.reset(updates=1e6)  # a resumed average keeps its full decay
        if raw_path.exists():
            self.model.load_weights(raw_path)


def predict_pages(model_640, pages, threshold: float = 0.05) -> dict:
    """Float-model detections on whole pages, decoded exactly as the runtime does."""
    preds = {}
    for k, (gray, _) in enumerate(pages):
        canvas, lb = letterbox(gray, EXPORT_SIZE)
        heat, box = model_640(canvas[None, ..., None], training=False)
        boxes, scores = decode_heatmap(heat.numpy()[0], box.numpy()[0], STRIDE, threshold)
        keep = nms(boxes, scores, 0.5)
        b = (boxes[keep] - np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])) / lb.scale
        preds[str(k)] = (b, scores[keep])
    return preds


def validate(weights: list, model_640, pages) -> dict:
    model_640.set_weights(weights)
    preds = predict_pages(model_640, pages)
    rep = evaluate_detections(preds, {str(k): b for k, (_, b) in enumerate(pages)}, score_threshold=0.3)
    return {"map50": rep.map50, "map50_95": rep.map50_95, "precision": rep.precision, "recall": rep.recall}


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tf.keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train_names, val_names = DD.split_documents(args.data)
    if args.limit:
        train_names, val_names = train_names[: args.limit], val_names[: max(2, args.limit // 4)]
    real = DD.load_pages(args.data, train_names)
    val = DD.load_pages(args.data, val_names)
    pool = signature_pool(args)
    synthetic = synthetic_pages(args, pool, args.synthetic_pages, args.seed) if args.synthetic_pages else []
    log.info("real pages: %d train, %d val; synthetic pages: %d; signature pool: %d",
             len(real), len(val), len(synthetic), len(pool.inks))

    model = build_detector(args.crop, args.alpha)
    model_640 = build_detector(EXPORT_SIZE, args.alpha)
    state_path = args.out / "state.json"
    state = {"epoch": 0, "phase": "float", "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        log.info("resuming from epoch %d (%s)", state["epoch"], state["phase"])
    float_lr = warmup_cosine(args.lr, args.steps, args.epochs * args.steps, floor=0.03)

    def make_step(m, opt, average: WeightAverage):
        @tf.function
        def step(x, heat_t, box_t, mask):
            with tf.GradientTape() as tape:
                heat, box = m(x, training=True)
                loss, focal, reg = detection_loss(heat, box, heat_t, box_t, mask)
                total_loss = loss + (tf.add_n(m.losses) if m.losses else 0.0)
            grads = tape.gradient(total_loss, m.trainable_variables)
            grads, _ = tf.clip_by_global_norm(grads, 10.0)
            opt.apply_gradients(zip(grads, m.trainable_variables))
            average.update()
            return loss, focal, reg
        return step

    maker = CropMaker(real, synthetic, args.synthetic_share, args.batch, args.crop, args.seed + state["epoch"])
    try:
        if state["phase"] == "float":
            average = WeightAverage(model, args.ema)
            if state["epoch"] > 0:
                average.load(args.out / "float_raw.h5", args.out / "float.h5")
            elif args.init is not None:
                model.load_weights(args.init)
                average.reset()
            opt = tf.keras.optimizers.Adam(args.lr)
            step = make_step(model, opt, average)
            for epoch in range(state["epoch"], args.epochs):
                run_epoch(step, maker, args.steps, epoch, "float", opt, float_lr)
                average.save(args.out / "float_raw.h5", args.out / "float.h5")
                metrics = validate(average.values(), model_640, val)
                state["epoch"] = epoch + 1
                state["history"].append({"phase": "float", "epoch": epoch + 1, **metrics})
                state_path.write_text(json.dumps(state, indent=1))
                log.info("epoch %d val %s", epoch + 1, metrics)
            state.update(phase="qat", epoch=0)
            state_path.write_text(json.dumps(state, indent=1))
        model.load_weights(args.out / "float.h5")
        qat = quantize_aware(model)
        qat_640 = quantize_aware(model_640)
        average = WeightAverage(qat, args.ema)
        if state["epoch"] > 0:
            average.load(args.out / "qat_raw.h5", args.out / "qat.h5")
        low = args.lr * 0.03
        opt = tf.keras.optimizers.Adam(low)
        step = make_step(qat, opt, average)
        for epoch in range(state["epoch"], args.qat_epochs):
            run_epoch(step, maker, args.steps, epoch, "qat", opt, lambda _: low)
            average.save(args.out / "qat_raw.h5", args.out / "qat.h5")
            metrics = validate(average.values(), qat_640, val)
            state["epoch"] = epoch + 1
            state["history"].append({"phase": "qat", "epoch": epoch + 1, **metrics})
            state_path.write_text(json.dumps(state, indent=1))
            log.info("qat epoch %d val %s", epoch + 1, metrics)
        if args.qat_epochs == 0:
            qat.save_weights(args.out / "qat.h5")
        state["phase"] = "done"
        state["config"] = recorded_options(args)
        state_path.write_text(json.dumps(state, indent=1))
    finally:
        maker.close()


def run_epoch(step, maker, steps, epoch, phase, opt, lr_fn):
    t = time.time()
    losses = []
    for k in range(steps):
        opt.learning_rate.assign(lr_fn(epoch * steps + k))
        x, heat_t, box_t, mask = maker.next()
        losses.append([float(v) for v in step(tf.constant(x), tf.constant(heat_t), tf.constant(box_t),
                                              tf.constant(mask))])
    loss, focal, reg = np.mean(losses, axis=0)
    log.info("%s epoch %d: loss %.3f (focal %.3f, box %.3f), %.1f crops/s", phase, epoch + 1, loss, focal, reg,
             steps * maker.batch / (time.time() - t))


if __name__ == "__main__":
    main()
