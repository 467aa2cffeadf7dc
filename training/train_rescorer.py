"""Train the detector's second stage: a small classifier that re-scores candidate boxes.

The page detector sees a signature at 640 px a page, where a logo in script type, a
handwritten date or a note looks much like a signature, and its scores for them overlap
(validation, v0.2: true signatures 0.5-0.85, such look-alikes 0.3-0.7). The rescorer looks
at each candidate box alone, at a finer scale (``sigedge.detect.rescorer_input``), and says
"signature or not"; the runtime fuses the two as the geometric mean of the probabilities.

Training examples are the shipped detector's own candidates (down to a score of 0.05) on
the training pages of documents_tobacco800 and on generated pages, labelled by their
overlap with the true boxes (IoU >= 0.5 signature, < 0.3 not, in between left out), plus
the true boxes jittered, plus random ink-bearing windows. Each candidate is cut three
times with a jittered box, as the detector's boxes are never exact. Validation pages are
never used for training; the log reports the fused mAP on them per epoch.

    TF_USE_LEGACY_KERAS=1 python -m training.train_rescorer --out runs/rescorer-v1
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import Detector, rank_rescored, rescorer_input  # noqa: E402
from sigedge.detection_metrics import evaluate_detections, iou_matrix  # noqa: E402
from training import detector_data as DD  # noqa: E402
from training.common import BackgroundBatches, base_parser, recorded_options, warmup_cosine  # noqa: E402
from training.train_detector import WeightAverage, signature_pool, synthetic_pages  # noqa: E402

log = logging.getLogger("train_rescorer")

HEIGHT, WIDTH, CONTEXT = 64, 160, 0.25
CANDIDATE_THRESHOLD = 0.05
#: Candidates re-scored on a page, best detector scores first. Real validation pages have 5
#: (median) to 19 candidates above the candidate threshold; the cap bounds a cluttered page's time.
MAX_RESCORED = 24
#: After rescoring, a box covering this much of a better one (intersection over the smaller
#: area) is dropped: a candidate spanning two signatures can otherwise be lifted above the
#: threshold by the rescorer, which sees signature strokes in it.
MAX_OVERLAP = 0.5
POSITIVE_IOU, NEGATIVE_IOU = 0.5, 0.3


def parse_args(argv=None):
    p = base_parser(__doc__, epochs=14, qat_epochs=3, batch=64)
    p.add_argument("--detector-bundle", type=Path, default=None,
                   help="bundle whose int8 detector proposes the candidates (default: the shipped one)")
    p.add_argument("--synthetic-pages", type=int, default=800)
    p.add_argument("--page-style", type=int, default=2)
    p.add_argument("--signatures", type=int, default=1500, help="real signatures in the pasting pool")
    p.add_argument("--pool-seed", type=int, default=4, help="seed of the signature pool (detector v0.2's)")
    p.add_argument("--jitters", type=int, default=3, help="jittered cuts of each candidate (cut once, up front)")
    p.add_argument("--online", action="store_true",
                   help="cut every crop when its batch is made, with a fresh jitter and blur each time (keeps the "
                        "pages, not the crops; --jitters is then unused)")
    p.add_argument("--extra-style", type=int, default=0,
                   help="also generate --synthetic-pages pages of this page style (0: none)")
    p.add_argument("--limit", type=int, default=0, help="use only N real pages (smoke tests)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="validate, save and export an exponential moving average of the weights with this decay "
                        "(0: the last step's weights, as v1)")
    p.add_argument("--geometric", type=float, default=0.0,
                   help="share of crops also moved, scaled, mirrored and given thinner or bolder strokes each "
                        "time they are drawn (0: contrast and noise only, as v1)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="targets eps/2 and 1-eps/2: bounds how sure the rescorer gets, so one wrong veto costs less")
    p.add_argument("--real-weight", type=int, default=1,
                   help="draw the crops from real pages this many times as often as the generated ones")
    p.add_argument("--teacher", type=Path, action="append", default=[],
                   help="a finished rescorer run (its qat.h5) to distil from; several: their mean logit")
    p.add_argument("--distill", type=float, default=0.7,
                   help="with --teacher: weight of the teachers' probability in the target (the rest: the label)")
    p.set_defaults(steps=0)  # 0: one pass over the examples per epoch
    return p.parse_args(argv)


def jitter(box: np.ndarray, rng: np.random.Generator, amount: float = 0.1) -> np.ndarray:
    """The box moved and resized by up to ``amount`` of its size (never collapsed)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rng.uniform(-amount, amount) * w, (y0 + y1) / 2 + rng.uniform(-amount, amount) * h
    w, h = w * np.exp(rng.uniform(-2 * amount, 2 * amount)), h * np.exp(rng.uniform(-2 * amount, 2 * amount))
    w, h = max(w, 4.0), max(h, 4.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def random_windows(canvas: np.ndarray, gt: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Signature-sized windows with some ink in them that overlap no true box."""
    h, w = canvas.shape
    out = []
    for _ in range(20 * n):
        bw = rng.uniform(0.06, 0.3) * w
        bh = bw / rng.uniform(1.5, 5.0)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        box = np.array([x0, y0, x0 + bw, y0 + bh], np.float32)
        if len(gt) and iou_matrix(box[None], gt).max() > 0.1:
            continue
        region = canvas[int(y0):int(y0 + bh), int(x0):int(x0 + bw)]
        if region.size and (region > 0.5).mean() > 0.01:
            out.append(box)
        if len(out) == n:
            break
    return out


def to_canvas(boxes: np.ndarray, lb) -> np.ndarray:
    """Page-pixel boxes in the detector input's pixels (the letterbox is a scale and a shift)."""
    shift = np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
    return np.asarray(boxes, np.float32).reshape(-1, 4) * lb.scale + shift


def page_boxes(gray: np.ndarray, gt: np.ndarray, detector: Detector,
               rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """(detector input canvas, [(box, label)]): candidates, true boxes and random ink windows."""
    canvas, cand, _, lb = detector.candidates(gray, CANDIDATE_THRESHOLD)
    gt = to_canvas(gt, lb)
    boxes: list[tuple[np.ndarray, int]] = []
    for b in cand:
        best = iou_matrix(b[None], gt).max() if len(gt) else 0.0
        if best >= POSITIVE_IOU:
            boxes.append((b, 1))
        elif best < NEGATIVE_IOU:
            boxes.append((b, 0))
    boxes += [(g, 1) for g in gt]
    boxes += [(b, 0) for b in random_windows(canvas, gt, rng, 3)]
    return canvas, boxes


def build_dataset(pages, detector: Detector, seed: int, jitters: int) -> dict[str, np.ndarray]:
    """Crops cut up front: each box ``jitters`` times (the first as proposed), with labels
    and the index of the page each came from."""
    rng = np.random.default_rng(seed)
    xs, ys, page_of = [], [], []
    for k, (gray, gt) in enumerate(pages):
        canvas, boxes = page_boxes(gray, np.asarray(gt, np.float32).reshape(-1, 4), detector, rng)
        for b, label in boxes:
            for j in range(jitters):
                xs.append(rescorer_input(canvas, tuple(b if j == 0 else jitter(b, rng)), HEIGHT, WIDTH, CONTEXT))
                ys.append(label)
                page_of.append(k)
        if k % 200 == 0:
            log.info("candidates from page %d/%d: %d crops so far", k, len(pages), len(xs))
    return {"x": np.stack(xs)[..., None].astype(np.float32), "y": np.array(ys, np.float32),
            "page": np.array(page_of, np.int32)}


def build_page_dataset(pages, detector: Detector, seed: int) -> dict[str, np.ndarray]:
    """For --online: the canvases (uint8, ink 255) and every box with its page and label."""
    rng = np.random.default_rng(seed)
    canvases, page_of, boxes, labels = [], [], [], []
    for k, (gray, gt) in enumerate(pages):
        canvas, found = page_boxes(gray, np.asarray(gt, np.float32).reshape(-1, 4), detector, rng)
        canvases.append(np.round(canvas * 255).astype(np.uint8))
        for b, label in found:
            page_of.append(k)
            boxes.append(b)
            labels.append(label)
        if k % 200 == 0:
            log.info("candidates from page %d/%d: %d boxes so far", k, len(pages), len(boxes))
    return {"canvases": np.stack(canvases), "page": np.array(page_of, np.int32),
            "boxes": np.array(boxes, np.float32).reshape(-1, 4), "y": np.array(labels, np.float32)}


class OnlineCrops(BackgroundBatches):
    """Batches cut from the stored canvases, each box jittered (2 times in 3) and blurred anew."""

    def __init__(self, data: dict[str, np.ndarray], batch: int, seed: int):
        self.data, self.batch = data, batch
        self.rng = np.random.default_rng(seed)
        super().__init__(self._make, prefetch=8)

    def _make(self):
        d, rng = self.data, self.rng
        idx = rng.integers(0, len(d["y"]), self.batch)
        crops = []
        for i in idx:
            box = d["boxes"][i] if rng.random() < 1 / 3 else jitter(d["boxes"][i], rng)
            crop = rescorer_input(d["canvases"][d["page"][i]].astype(np.float32) / 255.0, tuple(box), HEIGHT, WIDTH,
                                  CONTEXT)
            if rng.random() < 0.3:  # softer scans
                crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.4, 1.0))
            crops.append(crop)
        return np.stack(crops)[..., None], d["y"][idx]


def build_rescorer(height: int = HEIGHT, width: int = WIDTH) -> keras.Model:
    """A flat depthwise-separable CNN (about 40 k parameters) ending in one logit."""
    L = keras.layers
    x = inp = keras.Input((height, width, 1), name="crop")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for filters, stride in ((32, 1), (48, 2), (48, 1), (64, 2), (64, 1), (96, 2), (96, 1)):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
        x = L.Conv2D(filters, 1, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    out = L.Dense(1, name="signature_logit")(x)
    return keras.Model(inp, out, name="rescorer")


def reshape_crop(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One crop (H, W) moved (up to 6 % of its size), scaled (+-12 %), turned (+-4 degrees),
    mirrored half the time, and given bolder or thinner strokes or a blur now and then.

    The detector's boxes are never exact and pens, scans and page sizes vary; a mirrored
    signature is still a signature and mirrored print is still print.
    """
    h, w = crop.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-4, 4), float(np.exp(rng.uniform(-0.12, 0.12))))
    m[:, 2] += rng.uniform(-0.06, 0.06, 2) * (w, h)
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    r = rng.random()
    if r < 0.2:
        out = cv2.dilate(out, np.ones((2, 2), np.uint8))
    elif r < 0.3:
        out = cv2.erode(out, np.ones((2, 1), np.uint8))
    if rng.random() < 0.25:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.9))
    return np.ascontiguousarray(out)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, ink strength and scan noise, per crop (paper stays 0)."""
    n = len(x)
    gain = rng.uniform(0.6, 1.2, (n, 1, 1, 1)).astype(np.float32)
    gamma = rng.uniform(0.7, 1.4, (n, 1, 1, 1)).astype(np.float32)
    noise = rng.normal(0, 1, x.shape).astype(np.float32) * rng.uniform(0, 0.04, (n, 1, 1, 1)).astype(np.float32)
    return np.clip(gain * np.power(np.clip(x, 0, 1), gamma) + noise, 0, 1)


def fused_map(model: keras.Model, detector: Detector, pages) -> dict:
    """Detector candidates on labelled pages re-scored by ``model`` as the runtime does
    (the same cap, fusion and overlap rule): mAP, and P/R at a fused score of 0.5.

    Scored in the detector input's pixels (IoU does not change under the letterbox).
    """
    preds, truth = {}, {}
    for k, (gray, gt) in enumerate(pages):
        canvas, boxes, det, lb = detector.candidates(gray, CANDIDATE_THRESHOLD)
        boxes, det = boxes[:MAX_RESCORED], det[:MAX_RESCORED]
        if len(boxes):
            x = np.stack([rescorer_input(canvas, tuple(b), HEIGHT, WIDTH, CONTEXT) for b in boxes])[..., None]
            order, fused = rank_rescored(boxes, det, tf.sigmoid(model(x, training=False)).numpy(), 0.01, MAX_OVERLAP)
            boxes, det = boxes[order], fused[order]
        preds[str(k)], truth[str(k)] = (boxes, det), to_canvas(gt, lb)
    r = evaluate_detections(preds, truth, score_threshold=0.5)
    return {"map50": r.map50, "map50_95": r.map50_95, "precision": r.precision, "recall": r.recall}


def load_qat_rescorer(run: Path) -> keras.Model:
    """A finished run's quantization-aware rescorer (``qat.h5``, what the int8 export converts)."""
    model = tfmot.quantization.keras.quantize_model(build_rescorer())
    model.load_weights(run / "qat.h5")
    return model


def teacher_probabilities(runs: list[Path], x: np.ndarray, batch: int = 512) -> np.ndarray:
    """sigmoid(mean logit) of the teacher runs' QAT weights on every crop: an ensemble's
    judgement, to be learnt by one model that costs one rescorer's time a candidate."""
    logits = np.zeros(len(x), np.float32)
    for run in runs:
        teacher = load_qat_rescorer(run)
        for i in range(0, len(x), batch):
            logits[i:i + batch] += teacher(x[i:i + batch], training=False).numpy().reshape(-1)
        log.info("teacher %s: done", run)
    return (1.0 / (1.0 + np.exp(-logits / len(runs)))).astype(np.float32)


def train_phase(model, batches, y, args, epochs, steps_per_epoch, lr_fn, phase, state, state_path, detector, val,
                weights_path):
    """Train ``model`` for ``epochs`` of ``steps_per_epoch`` batches from ``batches(rng)`` -> (x, y);
    ``y`` (all labels) sets the class balance.

    With ``--ema`` the averaged weights are validated and saved to ``weights_path`` and the
    raw ones beside it (``*_raw.h5``, for resuming).
    """
    rng = np.random.default_rng(args.seed + len(state["history"]))
    opt = keras.optimizers.Adam(lr_fn(0))
    pos = max(1.0, float(y.sum()))
    pos_weight = (len(y) - pos) / pos  # balance the classes without resampling
    eps = args.label_smoothing
    average = WeightAverage(model, args.ema)
    raw_path = weights_path.with_name(weights_path.stem + "_raw.h5")
    if state["epoch"] > 0 and args.ema > 0:
        average.load(raw_path, weights_path)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = tf.squeeze(model(xb, training=True), -1)
            target = yb * (1.0 - eps) + 0.5 * eps
            loss = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(target, logits, pos_weight))
            loss += tf.add_n(model.losses) if model.losses else 0.0
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        average.update()
        return loss

    for epoch in range(state["epoch"], epochs):
        t = time.time()
        losses = []
        for s in range(steps_per_epoch):
            opt.learning_rate.assign(lr_fn(epoch * steps_per_epoch + s))
            xb, yb = batches(rng)
            if args.geometric > 0:
                xb = xb.copy()
                for i in np.nonzero(rng.random(len(xb)) < args.geometric)[0]:
                    xb[i, ..., 0] = reshape_crop(xb[i, ..., 0], rng)
            losses.append(float(step(tf.constant(augment(xb, rng)), tf.constant(yb))))
        if args.ema > 0:
            average.save(raw_path, weights_path)
            raw = model.get_weights()
            model.set_weights(average.values())
            metrics = fused_map(model, detector, val)
            model.set_weights(raw)
        else:
            model.save_weights(weights_path)
            metrics = fused_map(model, detector, val)
        state["epoch"] = epoch + 1
        state["history"].append({"phase": phase, "epoch": epoch + 1, "loss": float(np.mean(losses)), **metrics})
        state_path.write_text(json.dumps(state, indent=1))
        log.info("%s epoch %d: loss %.4f, %.0f crops/s, val %s", phase, epoch + 1, np.mean(losses),
                 steps_per_epoch * args.batch / (time.time() - t), metrics)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = ModelBundle.load(args.detector_bundle)
    detector = Detector(bundle.model("detector"))
    train_names, val_names = DD.split_documents(args.data)
    if args.limit:
        train_names, val_names = train_names[: args.limit], val_names[: max(2, args.limit // 4)]
    real = DD.load_pages(args.data, train_names)
    val = DD.load_pages(args.data, val_names)

    data_path = args.out / "examples.npz"
    if data_path.exists():
        with np.load(data_path) as z:
            data = {k: z[k] for k in z.files}
    else:
        pool_args = type(args)(**{**vars(args), "seed": args.pool_seed})
        pool = signature_pool(pool_args)
        synthetic = synthetic_pages(pool_args, pool, args.synthetic_pages, args.seed + 100) \
            if args.synthetic_pages else []
        if args.extra_style and args.synthetic_pages:
            extra_args = type(args)(**{**vars(pool_args), "page_style": args.extra_style})
            synthetic += synthetic_pages(extra_args, pool, args.synthetic_pages, args.seed + 200)
        if args.online:
            data = build_page_dataset(real + synthetic, detector, args.seed)
        else:
            data = build_dataset(real + synthetic, detector, args.seed, args.jitters)
            data["real"] = data.pop("page") < len(real)
        np.savez_compressed(data_path, **data)
    y = data["y"]
    log.info("examples: %d (%d signatures); real pages %d, validation pages %d", len(y), int(y.sum()),
             len(real), len(val))
    online = OnlineCrops(data, args.batch, args.seed) if args.online else None
    target = y
    if args.teacher:
        if args.online:
            raise SystemExit("--teacher needs crops cut up front (not --online)")
        target = (1.0 - args.distill) * y + args.distill * teacher_probabilities(args.teacher, data["x"])

    order = np.zeros(0, np.int64)
    pool = np.arange(len(y))
    if args.real_weight > 1:
        if "real" not in data:
            raise SystemExit(f"{data_path} predates --real-weight (it does not say which crops are real): "
                             "train into a new --out")
        pool = np.concatenate([pool, *[np.nonzero(data["real"])[0]] * (args.real_weight - 1)])

    def batches(rng: np.random.Generator):
        """The next batch: from the online cutter, or the next slice of a shuffled pass over the crops
        (real-page crops ``--real-weight`` times each)."""
        nonlocal order
        if online is not None:
            return online.next()
        if len(order) < args.batch:
            order = pool[rng.permutation(len(pool))]
        idx, order = order[:args.batch], order[args.batch:]
        return data["x"][idx], target[idx]

    state_path = args.out / "state.json"
    state = {"epoch": 0, "phase": "float", "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
    model = build_rescorer()
    steps = args.steps or max(1, len(pool) // args.batch)
    if state["phase"] == "float":
        if state["epoch"] > 0:
            model.load_weights(args.out / "float.h5")
        lr = warmup_cosine(args.lr, steps, args.epochs * steps, floor=0.03)
        train_phase(model, batches, y, args, args.epochs, steps, lr, "float", state, state_path, detector, val,
                    args.out / "float.h5")
        state.update(phase="qat", epoch=0)
        state_path.write_text(json.dumps(state, indent=1))
    model.load_weights(args.out / "float.h5")
    qat = tfmot.quantization.keras.quantize_model(model)
    if state["epoch"] > 0:
        qat.load_weights(args.out / "qat.h5")
    low = args.lr * 0.03
    train_phase(qat, batches, y, args, args.qat_epochs, steps, lambda _: low, "qat", state, state_path, detector, val,
                args.out / "qat.h5")
    if args.qat_epochs == 0:
        qat.save_weights(args.out / "qat.h5")
    if online is not None:
        online.close()
    state["phase"] = "done"
    state["config"] = recorded_options(args)
    state_path.write_text(json.dumps(state, indent=1))


if __name__ == "__main__":
    main()
