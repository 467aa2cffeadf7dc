"""Train the learned cleaner: float training, then quantization-aware fine-tuning.

    TF_USE_LEGACY_KERAS=1 python -m training.train_cleaner --out runs/cleaner

The cleaner marks, pixel by pixel, which ink of a crop belongs to the signature
(``sigedge.clean.LearnedCleaner`` paints the rest white). Training pairs come from
``training/cleansynth.py``: real signatures of the embedder's *training* writers (all three
collections, fold 0's writer split) on backgrounds cut from the page-disjoint *training*
pages of documents_tobacco800, from cheque templates 1-7 of SSBI, or drawn synthetically
(printed text, lines, boxes, grids, stamps). Validation pairs, fixed by a seed, use the
*validation* writers, pages and cheque templates 8-10; every epoch reports the F1 of the
signature class over the crop's ink pixels, checkpoints, and ``--resume`` continues a
stopped run. ``sigedge export --int8 --model cleaner --run RUN --out BUNDLE`` then adds the
int8 TFLite to a bundle.

The network is a small encoder-decoder on 128x256 canvases (the embedder's size): a 3x3
stem, four stride-2 levels of depthwise-separable blocks (to 8x16), and a decoder that
upsamples and adds each level's features back (as the detector's feature pyramid; additions
rather than concatenations keep every tensor's int8 scale simple), ending in one logit a pixel.
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
import tf_keras as keras  # noqa: E402

from training import data as D  # noqa: E402
from training import detector_data as DD  # noqa: E402
from training.cleansynth import TRAIN_CHEQUES, CleanerSynth, ClutterSources  # noqa: E402
from training.common import BackgroundBatches, base_parser, recorded_options, warmup_cosine  # noqa: E402
from training.docsynth import SignaturePool  # noqa: E402

log = logging.getLogger("train_cleaner")

HEIGHT, WIDTH = 128, 256
WIDTHS = (8, 16, 32, 48, 64)
VAL_SEED = 4242
#: An input canvas pixel at least this dark counts as ink in the validation F1.
INK_LEVEL = 0.2


def parse_args(argv=None):
    p = base_parser(__doc__, epochs=30, qat_epochs=3, batch=32)
    p.add_argument("--signatures", type=int, default=3000, help="training signatures in the pasting pool")
    p.add_argument("--val-pairs", type=int, default=384)
    p.add_argument("--limit", type=int, default=0, help="use only N signatures and pages (smoke tests)")
    p.add_argument("--synthetic-signatures", type=int, default=0,
                   help="procedural signatures (training/synthsig.py) added to the pasting pool")
    p.add_argument("--augment-ink", type=float, default=0.0,
                   help="chance that a pasted signature is warped first (affine, elastic, pen)")
    p.add_argument("--gate-writers", type=float, default=0.0,
                   help="share of the training writers of sigcomp2011_dutch and ssbi kept out of the pool, for "
                        "fitting where the cleaner is applied (export/fit_cleaner_gate.py) on writers it never saw")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- model
def _conv_bn(x, filters, kernel, stride, name):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


def _separable(x, filters, stride, name):
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, 1, f"{name}_pw")


def build_cleaner(height: int = HEIGHT, width: int = WIDTH, widths: tuple[int, ...] = WIDTHS) -> keras.Model:
    """One flat functional model (``quantize_model`` refuses nested ones): canvas in, logit out."""
    inp = keras.Input((height, width, 1), name="image")
    x = _conv_bn(inp, widths[0], 3, 1, "stem")
    skips = [x]
    for level, filters in enumerate(widths[1:], start=1):
        x = _separable(x, filters, 2, f"down{level}a")
        x = _separable(x, filters, 1, f"down{level}b")
        skips.append(x)
    for level in range(len(widths) - 2, -1, -1):
        x = keras.layers.UpSampling2D(2, name=f"up{level}")(x)
        x = _conv_bn(x, widths[level], 1, 1, f"up{level}_proj")
        x = keras.layers.Add(name=f"fuse{level}")([x, skips[level]])
        x = _separable(x, widths[level], 1, f"dec{level}")
    out = keras.layers.Conv2D(1, 1, name="signature_ink")(x)
    return keras.Model(inp, out, name="sigedge_cleaner")


def quantize_aware(model: keras.Model) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(model)


def cleaner_loss(logits, target, canvas):
    """Binary cross-entropy weighted toward ink pixels, plus a soft Dice term on the signature.

    Paper pixels are painted white whatever the mask says there, so the decision that matters
    is on ink: those pixels weigh five times as much."""
    weight = 1.0 + 4.0 * tf.cast(canvas > INK_LEVEL, tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    bce = tf.reduce_sum(bce * weight) / tf.reduce_sum(weight)
    p = tf.sigmoid(logits)
    inter = tf.reduce_sum(p * target, axis=[1, 2, 3])
    dice = 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(p, axis=[1, 2, 3]) + tf.reduce_sum(target, axis=[1, 2, 3]) + 1.0)
    return bce + tf.reduce_mean(dice)


def ink_f1(prob: np.ndarray, target: np.ndarray, canvas: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision, recall and F1 of the signature class over the canvases' ink pixels.

    Signature pixels are ink where the target is at least 0.5; clutter pixels are ink with no
    signature within one pixel. The ring between (the blurred edges of strokes, ink in the
    input but not in the target) counts for neither, so that a stroke's halo is not scored
    as clutter kept."""
    ink = canvas > INK_LEVEL
    true = (target >= 0.5) & ink
    clutter = ink & ~_grow(target > 0.05)
    pred = prob >= threshold
    tp, fp = float((pred & true).sum()), float((pred & clutter).sum())
    precision = tp / max(1.0, tp + fp)
    recall = tp / max(1.0, float(true.sum()))
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(1e-9, precision + recall),
            "clutter_kept": fp / max(1.0, float(clutter.sum()))}


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` (N, H, W, 1) grown by one pixel in every direction (a 3x3 maximum)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = mask.shape[1:3]
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy:dy + h, dx:dx + w]
    return out


# ---------------------------------------------------------------------------- data
def signature_pool(args, writers: set[str], tag: str, n: int) -> SignaturePool:
    """Ink images of ``n`` signatures (genuine and forged) of ``writers``, cached."""
    cache = args.cache / f"cleaner_sigpool_{tag}_{n}_{args.seed}.npz"
    if cache.exists():
        return SignaturePool.load(cache)
    samples = D.load_all(args.data)
    paths = [s.path for s in samples if s.writer in writers]
    rng = np.random.default_rng(args.seed)
    chosen = [paths[i] for i in rng.choice(len(paths), min(n, len(paths)), replace=False)]
    pool = SignaturePool.from_paths(chosen)
    args.cache.mkdir(parents=True, exist_ok=True)
    pool.save(cache)
    return pool


def gate_writers(samples: list, train_writers: set[str], fraction: float, seed: int = D.SPLIT_SEED) -> set[str]:
    """``fraction`` of each of sigcomp2011_dutch's and ssbi's training writers (seeded): kept out
    of the cleaner's pool so that its gate is fitted on signatures it never saw."""
    if fraction <= 0:
        return set()
    rng = np.random.default_rng(seed + 17)
    out: set[str] = set()
    for name in ("sigcomp2011_dutch", "ssbi"):
        writers = sorted({s.writer for s in samples if s.dataset == name and s.writer in train_writers})
        k = int(round(fraction * len(writers)))
        out |= {writers[i] for i in rng.choice(len(writers), k, replace=False)} if k else set()
    return out


def synthetic_pool(n: int, seed: int, cache: Path) -> list[np.ndarray]:
    """``n`` procedural signatures (ink images cropped to their ink), a quarter of them forged."""
    from training.cleansynth import cropped_to_ink
    from training.synthsig import random_signer, render

    path = cache / f"cleaner_synthetic_{n}_{seed}.npz"
    if path.exists():
        return SignaturePool.load(path).inks
    rng = np.random.default_rng(seed + 99)
    inks = []
    while len(inks) < n:
        ink = cropped_to_ink(render(random_signer(rng), rng, forgery=rng.random() < 0.25, out_hw=(160, 480)))
        if ink is not None:
            inks.append(ink)
    cache.mkdir(parents=True, exist_ok=True)
    SignaturePool(inks).save(path)
    return inks


def sources(args, split: str) -> ClutterSources:
    train_pages, val_pages = DD.split_documents(args.data)
    pages = train_pages if split == "train" else val_pages
    if args.limit:
        pages = pages[: max(2, args.limit // 8)]
    cheques = range(TRAIN_CHEQUES) if split == "train" else range(TRAIN_CHEQUES, 100)
    return ClutterSources.load(args.data, pages, cheques)


class PairBatches(BackgroundBatches):
    def __init__(self, synth: CleanerSynth, batch: int):
        self.synth, self.batch = synth, batch
        super().__init__(lambda: synth.batch(batch), prefetch=8)


def validation_set(args) -> tuple[np.ndarray, np.ndarray]:
    samples = D.load_all(args.data)
    _, val_writers = D.split_writers(samples)
    pool = signature_pool(args, val_writers, "val", 600 if not args.limit else args.limit)
    synth = CleanerSynth(pool, sources(args, "val"), seed=VAL_SEED, height=HEIGHT, width=WIDTH)
    return synth.batch(args.val_pairs)


def validate(model, val: tuple[np.ndarray, np.ndarray]) -> dict:
    x, y = val
    prob = tf.sigmoid(model.predict(x, batch_size=64, verbose=0)).numpy()
    return ink_f1(prob, y, x)


# ---------------------------------------------------------------------------- training
def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tf.keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    samples = D.load_all(args.data)
    train_writers, _ = D.split_writers(samples)
    held_out = gate_writers(samples, train_writers, args.gate_writers)
    n_sigs = args.limit or args.signatures
    tag = "train" if not held_out else f"train-gate{args.gate_writers:g}"
    pool = signature_pool(args, train_writers - held_out, tag, n_sigs)
    if args.synthetic_signatures:
        pool = SignaturePool(pool.inks + synthetic_pool(args.synthetic_signatures, args.seed, args.cache))
    log.info("pool: %d signatures (%d procedural); %d training writers held out for the gate", len(pool.inks),
             args.synthetic_signatures, len(held_out))
    train_sources = sources(args, "train")
    val = validation_set(args)
    log.info("signatures %d, pages %d, cheque regions %d; validation pairs %d", len(pool.inks),
             len(train_sources.pages), len(train_sources.cheques), len(val[0]))

    model = build_cleaner()
    state_path = args.out / "state.json"
    state = {"epoch": 0, "phase": "float", "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        log.info("resuming from epoch %d (%s)", state["epoch"], state["phase"])
    state["config"] = recorded_options(args)
    float_lr = warmup_cosine(args.lr, args.steps, args.epochs * args.steps, floor=0.03)
    # a resumed run draws new pairs: the generator's stream continues from a new seed
    batches = PairBatches(CleanerSynth(pool, train_sources, seed=args.seed * 1000 + len(state["history"]),
                                       height=HEIGHT, width=WIDTH, augment_ink=args.augment_ink), args.batch)

    def make_step(m, opt):
        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = cleaner_loss(m(x, training=True), y, x)
            grads = tape.gradient(loss, m.trainable_variables)
            opt.apply_gradients(zip(grads, m.trainable_variables))
            return loss
        return step

    def run_phase(m, phase, epochs, lr_fn, weights_name):
        opt = tf.keras.optimizers.Adam(lr_fn(0))
        step = make_step(m, opt)
        for epoch in range(state["epoch"], epochs):
            t, losses = time.time(), []
            for k in range(args.steps):
                opt.learning_rate.assign(lr_fn(epoch * args.steps + k))
                x, y = batches.next()
                losses.append(float(step(tf.constant(x), tf.constant(y))))
            m.save_weights(args.out / weights_name)
            metrics = validate(m, val)
            state["epoch"] = epoch + 1
            state["history"].append({"phase": phase, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                                     "pairs_per_s": args.steps * args.batch / (time.time() - t), **metrics})
            state_path.write_text(json.dumps(state, indent=1))
            log.info("%s epoch %d: loss %.4f, val F1 %.4f (P %.4f R %.4f, clutter kept %.4f), %.0f pairs/s", phase,
                     epoch + 1, np.mean(losses), metrics["f1"], metrics["precision"], metrics["recall"],
                     metrics["clutter_kept"], state["history"][-1]["pairs_per_s"])

    try:
        if state["phase"] == "float":
            if state["epoch"] > 0:
                model.load_weights(args.out / "float.h5")
            run_phase(model, "float", args.epochs, float_lr, "float.h5")
            state.update(phase="qat", epoch=0)
            state_path.write_text(json.dumps(state, indent=1))
        model.load_weights(args.out / "float.h5")
        qat = quantize_aware(model)
        if state["epoch"] > 0:
            qat.load_weights(args.out / "qat.h5")
        low = args.lr * 0.03
        run_phase(qat, "qat", args.qat_epochs, lambda _: low, "qat.h5")
        if args.qat_epochs == 0:
            qat.save_weights(args.out / "qat.h5")
        state["phase"] = "done"
        state_path.write_text(json.dumps(state, indent=1))
    finally:
        batches.close()


def load_qat_cleaner(run: Path) -> keras.Model:
    """The run's quantization-aware model with its trained weights (for export)."""
    qat = quantize_aware(build_cleaner())
    qat.load_weights(run / "qat.h5")
    return qat


if __name__ == "__main__":
    main()
