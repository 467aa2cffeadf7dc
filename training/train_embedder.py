"""Train the sigedge embedder: float pre-training, then quantization-aware fine-tuning.

    TF_USE_LEGACY_KERAS=1 python -m training.train_embedder --out runs/embedder

Writer-disjoint split (training/data.py, fixed seed). Objective: CosFace margin softmax
over identities (SigComp/SSBI writers, their forgeries as separate classes, cross-media
(writer, name) pairs), batches balanced across collections, optionally (``--synthetic-mix``)
with procedural signers as further classes and genuine/forgery blocks; optionally (``--teacher``) a
relational distillation term that asks the student's similarities within a batch to follow
those of a larger float teacher (e.g. the SigNet baseline) trained on the same writers. Every epoch writes a
checkpoint; ``--resume`` continues from the last one. The run ends with ``qat.h5`` (the
QAT model's weights) that ``python -m export.export_embedder`` turns into int8 TFLite.
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

from sigedge.bundle import sha256_file  # noqa: E402
from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.normalize import NormalizeOptions  # noqa: E402
from sigedge.scoring import l2_normalize  # noqa: E402
from training import data as D  # noqa: E402
from training.common import BackgroundBatches, base_parser, recorded_options, warmup_cosine  # noqa: E402
from training.augment import DEFAULT_MAX_ROTATION, PARTIAL_VIEW_BAND, augment  # noqa: E402
from training.model import CosFaceHead, build_model, quantize_aware  # noqa: E402
from training.synthsig import make_synthetic_set  # noqa: E402

log = logging.getLogger("train_embedder")

#: Cached canvases are larger than the model input so augmentation has detail to work on.
CACHE_OPTS = NormalizeOptions(height=192, width=384, margin=0.02)
DATASET_WEIGHTS = {"sigcomp2011_dutch": 0.35, "ssbi": 0.2, "cross_media_chinese": 0.45}


def parse_args(argv=None):
    p = base_parser(__doc__, epochs=30, qat_epochs=4, batch=48)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--limit", type=int, default=0, help="use only N samples (smoke tests)")
    p.add_argument("--pair-writers", type=int, default=0,
                   help="per batch, this many writers with skilled forgeries contribute a genuine/forgery "
                        "block (4 genuines + 2 forgeries each) to a triplet ranking loss (0: off)")
    p.add_argument("--name-pair-writers", type=int, default=0,
                   help="per batch, this many cross-media identities (a writer's one name) add a block to the "
                        "ranking loss: 4 of its signatures against 2 of the same name written by other training "
                        "writers, a same-text impostor standing in for a skilled forgery (0: off)")
    p.add_argument("--pair-weight", type=float, default=1.0, help="weight of the ranking loss")
    p.add_argument("--pair-margin", type=float, default=0.3, help="cosine margin of the ranking loss")
    p.add_argument("--arch", choices=("mobilenetv2", "signet"), default="mobilenetv2",
                   help="mobilenetv2: the shipped embedder; signet: the float SigNet baseline of the "
                        "side-by-side report (no QAT; use --qat-epochs 0 --height 150 --width 220 --dim 2048)")
    p.add_argument("--synthetic", type=int, default=0,
                   help="pre-train on this many procedural signers (training/synthsig.py) instead of the "
                        "real training writers; validation stays on real writers")
    p.add_argument("--synthetic-mix", type=int, default=0,
                   help="train on the real training writers *and* this many procedural signers at once: "
                        "their genuines and forgeries are extra classes (a share --synthetic-weight of "
                        "each batch), and --synthetic-pair-writers of them add genuine/forgery blocks to "
                        "the ranking loss (real data has 42-44 writers with skilled forgeries a fold)")
    p.add_argument("--synthetic-weight", type=float, default=0.25,
                   help="with --synthetic-mix: share of the batch outside the ranking blocks drawn from "
                        "the procedural signers")
    p.add_argument("--synthetic-pair-writers", type=int, default=0,
                   help="with --synthetic-mix: ranking-loss blocks of procedural signers per batch, on top "
                        "of --pair-writers blocks of real writers")
    p.add_argument("--init", type=Path, default=None,
                   help="start the float phase from these embedder weights (e.g. a --synthetic run's float.h5)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="a finished float run of the same fold (e.g. runs/signet-fold2: state.json and float.h5) "
                        "whose embeddings of the training signatures the student's batch similarities should follow")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss")
    p.add_argument("--qat-freeze-bn", action="store_true",
                   help="keep batch-norm statistics fixed during quantization-aware training, so the "
                        "quantisation ranges are learned against the statistics the float model ends with")
    p.add_argument("--max-rotation", type=float, default=DEFAULT_MAX_ROTATION,
                   help="rotation range of the pose augmentation, degrees either way (scans arrive rotated "
                        "by up to ~15 degrees; the robustness benchmark rotates by +-15)")
    p.add_argument("--fold", type=int, default=0,
                   help="which block of writers is held out for validation (0: the shipped split; "
                        "1-3: the other sigcomp2011_dutch folds of benchmarks/crossval.py)")
    p.add_argument("--mirror-writers", action="store_true",
                   help="every training identity also enters as three mirror images of itself (flipped "
                        "left-right, upside down, and both), each a class of its own, and so do its ranking "
                        "blocks: four times the writers with skilled forgeries (42-44 a fold), each with its "
                        "real forgeries mirrored alike; validation writers stay as scanned")
    p.add_argument("--partial-view", type=float, default=0.0,
                   help="each training sample, with this chance, leaves out a vertical band of "
                        f"{100 * PARTIAL_VIEW_BAND[0]:.0f}-{100 * PARTIAL_VIEW_BAND[1]:.0f}%% of its signature's width before the "
                        "crop and fit (partial views, so the model cannot lean on a few local cues of the "
                        "writers it trains on; 0: off)")
    p.add_argument("--writer-fraction", type=float, default=1.0,
                   help="train on this share of each collection's training writers (a fixed, nested "
                        "subset; for learning curves); validation writers are unchanged")
    return p.parse_args(argv)


PAIR_GENUINES, PAIR_FORGERIES = 4, 2


#: The mirror images a training identity enters as with --mirror-writers: as scanned, flipped
#: left-right, upside down, both (the axes np.flip takes).
MIRRORS = (None, 1, 0, (0, 1))


def mirrored(canvas: np.ndarray, k: int) -> np.ndarray:
    """The canvas as its ``k``-th mirror image (0: unchanged)."""
    # OpenCV refuses the negative strides of a flipped view
    return canvas if MIRRORS[k] is None else np.ascontiguousarray(np.flip(canvas, MIRRORS[k]))


def mirror_identities(labels: np.ndarray, weights: np.ndarray, groups: list) -> tuple:
    """Four times the identities: mirror image ``k`` of sample ``i`` is index ``i + k * N``,
    a class of its own (``label + k * classes``), as likely as the sample itself, and each
    ranking group is repeated for every mirror image, its genuines and forgeries mirrored alike.

    A writer's skilled forgeries differ from the genuines in how they were written
    (hesitation, tremor, pressure), which a mirror keeps; its shape is one the forger never
    saw, so it is a new writer with real forgeries, where procedural forgeries were not.
    """
    n, classes, k = len(labels), int(labels.max()) + 1, len(MIRRORS)
    labels = np.concatenate([labels + m * classes for m in range(k)])
    weights = np.tile(weights, k) / k
    groups = [None if g is None else {(key, m): (gen + m * n, forg + m * n) for key, (gen, forg) in g.items()
                                      for m in range(k)} for g in groups]
    return labels, weights, groups


class BatchMaker(BackgroundBatches):
    """Augmented batches made in a background thread (OpenCV releases the GIL).

    A batch is ``batch`` samples drawn by ``weights``; with ``pair_pools`` (a list of
    (groups, blocks a batch), groups mapping writer -> (genuine indices, forgery indices))
    its first part is instead blocks of one writer's genuines and forgeries, for the
    ranking loss: each pool's ``blocks`` in turn, so that a large pool (procedural signers,
    cross-media names) does not crowd out a small one (real skilled forgeries). Each
    sample comes with its block number (-1 outside blocks) and a forgery flag.
    """

    def __init__(self, canvases, labels, weights, batch, hw, seed, prefetch=6, pair_pools=(),
                 max_rotation=DEFAULT_MAX_ROTATION, partial_view=0.0):
        self.canvases, self.labels, self.batch, self.hw = canvases, labels, batch, hw
        self.max_rotation, self.partial_view = max_rotation, partial_view
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.pools = [(list(g.values()), n) for g, n in pair_pools if g and n]
        super().__init__(self._batch, prefetch)

    def _indices(self):
        idx, group, forged = [], [], []
        b = 0
        for groups, n in self.pools:
            for w in self.rng.choice(len(groups), n, replace=False):
                gen, forg = groups[w]
                g = self.rng.choice(gen, PAIR_GENUINES, replace=len(gen) < PAIR_GENUINES)
                f = self.rng.choice(forg, PAIR_FORGERIES, replace=len(forg) < PAIR_FORGERIES)
                idx += [*g, *f]
                group += [b] * (PAIR_GENUINES + PAIR_FORGERIES)
                forged += [0] * PAIR_GENUINES + [1] * PAIR_FORGERIES
                b += 1
        rest = self.batch - len(idx)
        idx += list(self.rng.choice(len(self.labels), size=rest, p=self.p))
        group += [-1] * rest
        forged += [0] * rest
        return np.array(idx), np.array(group, np.int32), np.array(forged, np.int32)

    def _batch(self):
        idx, group, forged = self._indices()
        n = len(self.canvases)  # an index past the canvases is a mirror image (mirror_identities)
        x = np.stack([augment(mirrored(self.canvases[i % n], i // n), self.rng, self.hw,
                              max_rotation=self.max_rotation, partial_view=self.partial_view)
                      for i in idx]).astype(np.float32) / 255.0
        return x[..., None], self.labels[idx].astype(np.int32), group, forged, idx.astype(np.int32)


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
    blocks = (args.pair_writers + args.name_pair_writers
              + (args.synthetic_pair_writers if args.synthetic_mix else 0))
    if blocks * (PAIR_GENUINES + PAIR_FORGERIES) > args.batch:
        raise SystemExit(f"--pair-writers {args.pair_writers} (with --name-pair-writers {args.name_pair_writers} "
                         f"and --synthetic-pair-writers {args.synthetic_pair_writers}) needs a batch of at least "
                         f"{blocks * (PAIR_GENUINES + PAIR_FORGERIES)}")
    if args.name_pair_writers and args.synthetic:
        raise SystemExit("--name-pair-writers draws on the real cross-media writers: not with --synthetic")
    if args.synthetic_mix and (args.synthetic or args.teacher):
        raise SystemExit("--synthetic-mix adds procedural signers to the real writers: not with --synthetic "
                         "(procedural signers alone) or --teacher (which embeds the real writers only)")
    if not 0.0 < args.synthetic_weight < 1.0:
        raise SystemExit(f"--synthetic-weight must be in (0, 1), got {args.synthetic_weight}")
    if args.mirror_writers and (args.synthetic or args.synthetic_mix or args.teacher):
        raise SystemExit("--mirror-writers mirrors the real training writers: not with --synthetic, "
                         "--synthetic-mix or --teacher")
    if not 0.0 <= args.partial_view <= 1.0:
        raise SystemExit(f"--partial-view must be in [0, 1], got {args.partial_view}")
    if not 0.0 < args.writer_fraction <= 1.0:
        raise SystemExit(f"--writer-fraction must be in (0, 1], got {args.writer_fraction}")
    if args.arch == "signet" and args.qat_epochs:
        raise SystemExit("--arch signet is a float baseline: pass --qat-epochs 0")
    if args.teacher and args.synthetic:
        raise SystemExit("--teacher distils on the real training writers; it cannot be used with --synthetic")
    teacher_cfg = teacher_config(args.teacher, args.fold) if args.teacher else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tf.keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    hw = (args.height, args.width)

    samples = D.load_all(args.data)
    train_writers, val_writers = D.split_writers(samples, fold=args.fold, train_fraction=args.writer_fraction)
    train = [s for s in samples if s.writer in train_writers]
    val = [s for s in samples if s.writer in val_writers]
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train = [train[i] for i in sorted(rng.choice(len(train), args.limit, replace=False))]
        val = [s for s in val if s.dataset == "sigcomp2011_dutch"][: args.limit]
    t0 = time.time()
    if args.synthetic:
        synth = make_synthetic_set(args.synthetic, seed=args.seed, out_hw=(CACHE_OPTS.height, CACHE_OPTS.width),
                                   cache_dir=args.cache)
        train_canv, labels = synth.canvases, synth.labels()
        n_classes = int(labels.max()) + 1
        weights = np.ones(len(labels))
        pair_groups = synth.groups() if args.pair_writers else None
    else:
        identities = sorted({s.identity for s in train})
        ident_index = {k: i for i, k in enumerate(identities)}
        labels = np.array([ident_index[s.identity] for s in train])
        n_classes = len(identities)
        counts = {ds: sum(s.dataset == ds for s in train) for ds in DATASET_WEIGHTS}
        weights = np.array([DATASET_WEIGHTS[s.dataset] / counts[s.dataset] for s in train])
        train_canv = D.preprocess(train, CACHE_OPTS, args.cache)
        pair_groups = skilled_groups(train) if args.pair_writers else None
    name_groups = same_name_groups(train) if args.name_pair_writers else None
    if args.name_pair_writers and not name_groups:
        raise SystemExit("--name-pair-writers: the training writers hold no cross-media name written by two writers")
    synth_pair_groups = None
    if args.synthetic_mix:
        synth = make_synthetic_set(args.synthetic_mix, seed=args.seed, out_hw=(CACHE_OPTS.height, CACHE_OPTS.width),
                                   cache_dir=args.cache)
        offset = len(labels)
        labels = np.concatenate([labels, synth.labels() + n_classes])
        n_classes = int(labels.max()) + 1
        weights = np.concatenate([weights / weights.sum() * (1.0 - args.synthetic_weight),
                                  np.full(len(synth.signer), args.synthetic_weight / len(synth.signer))])
        train_canv = np.concatenate([train_canv, synth.canvases])
        synth_pair_groups = {k: (g + offset, f + offset) for k, (g, f) in synth.groups().items()}
    if args.mirror_writers:
        labels, weights, (pair_groups, name_groups) = mirror_identities(labels, weights, [pair_groups, name_groups])
        n_classes = int(labels.max()) + 1
    log.info("train: %d samples, %d classes (made in %.0fs); val: %d samples", len(labels), n_classes,
             time.time() - t0, len(val))
    val_opts = NormalizeOptions(height=args.height, width=args.width)
    val_sets = {}
    for ds in ("sigcomp2011_dutch", "ssbi", "cross_media_chinese"):
        vs = [s for s in val if s.dataset == ds]
        if len({s.writer for s in vs}) >= 2:
            key = (lambda s: s.identity) if ds == "cross_media_chinese" else (lambda s: s.writer)
            val_sets[ds] = (D.preprocess(vs, val_opts, args.cache), [key(s) for s in vs], [s.kind for s in vs])

    model = build_model(args.arch, args.height, args.width, args.alpha, args.dim)
    head = CosFaceHead(args.dim, n_classes, seed=args.seed)
    state_path = args.out / "state.json"
    state = {"epoch": 0, "phase": "float", "history": []}
    if args.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        log.info("resuming from epoch %d (%s)", state["epoch"], state["phase"])
        started = state.get("started_with", {})
        if not started:
            log.warning("--resume: %s does not record what it started with (a run older than that record); "
                        "its --teacher, --distill-weight and --mirror-writers cannot be checked, and are taken as given now",
                        state_path)
        if str(started.get("teacher", args.teacher)) != str(args.teacher):
            raise SystemExit(f"--resume: the run started with --teacher {started.get('teacher')}, not {args.teacher}")
        if args.teacher and float(started.get("distill_weight", args.distill_weight)) != args.distill_weight:
            raise SystemExit(f"--resume: the run started with --distill-weight {started['distill_weight']}, "
                             f"not {args.distill_weight}")
        if bool(started.get("mirror_writers", args.mirror_writers)) != args.mirror_writers:
            raise SystemExit(f"--resume: the run started {'with' if started['mirror_writers'] else 'without'} "
                             "--mirror-writers, which decides its classes")
    # what the run started with, so a resume cannot silently change the objective
    state.setdefault("started_with", {"teacher": str(args.teacher), "distill_weight": args.distill_weight,
                                      "mirror_writers": args.mirror_writers})

    float_lr = warmup_cosine(args.lr, args.steps, args.epochs * args.steps, floor=0.05)
    teacher = None
    if args.teacher:
        teacher = tf.constant(teacher_embeddings(args.teacher, teacher_cfg, train, args.cache, args.out))

    def make_step(m, opt):
        @tf.function
        def step(x, y, group, forged, idx):
            with tf.GradientTape() as tape:
                emb = m(x, training=True)
                logits = head.logits(emb, y)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
                if blocks:
                    loss += args.pair_weight * skilled_ranking_loss(emb, group, forged, args.pair_margin)
                if teacher is not None:
                    loss += args.distill_weight * relational_distillation_loss(emb, tf.gather(teacher, idx))
                loss += tf.add_n(m.losses) if m.losses else 0.0
            vars_ = m.trainable_variables + [head.w]
            grads = tape.gradient(loss, vars_)
            opt.apply_gradients(zip(grads, vars_))
            acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
            return loss, acc
        return step

    maker = BatchMaker(train_canv, labels, weights, args.batch, hw, args.seed + state["epoch"],
                       pair_pools=[(pair_groups, args.pair_writers), (name_groups, args.name_pair_writers),
                                   (synth_pair_groups, args.synthetic_pair_writers)],
                       max_rotation=args.max_rotation, partial_view=args.partial_view)
    try:
        if state["phase"] == "float":
            if state["epoch"] > 0:
                model.load_weights(args.out / "float.h5")
                head.w.assign(np.load(args.out / "head.npy"))
            elif args.init:
                model.load_weights(args.init)
                log.info("float phase starts from %s", args.init)
                load_matching_head(head, args.init.parent, args)
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
        if args.arch == "mobilenetv2":  # the SigNet baseline stays float
            quantization_aware_phase(args, model, head, maker, make_step, val_sets, state, state_path)
        state["phase"] = "done"
        state["config"] = recorded_options(args)
        state_path.write_text(json.dumps(state, indent=1))
    finally:
        maker.close()


def quantization_aware_phase(args, model, head, maker, make_step, val_sets, state, state_path) -> None:
    """Quantization-aware fine-tuning from the float weights, at a low learning rate."""
    model.load_weights(args.out / "float.h5")
    head.w.assign(np.load(args.out / "head.npy"))
    if args.qat_freeze_bn:
        freeze_batch_norm(model)
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


def skilled_groups(train) -> dict:
    """Training writers that have skilled forgeries: writer -> (genuine indices, forgery indices)."""
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for i, smp in enumerate(train):
        groups.setdefault(smp.writer, ([], []))[smp.kind == "forgery"].append(i)
    return {w: (np.array(g), np.array(f)) for w, (g, f) in groups.items() if len(g) >= 2 and len(f) >= 1}


def same_name_groups(train) -> dict:
    """Cross-media identities (a writer's one name): identity -> (its indices, the same name's
    indices by other training writers). Same text by another hand is the nearest the
    genuine-only collection comes to a skilled forgery, and it has many more writers."""
    by_identity: dict[str, list[int]] = {}
    by_name: dict[str, list[int]] = {}
    for i, smp in enumerate(train):
        if smp.dataset == "cross_media_chinese" and smp.kind == "genuine":
            by_identity.setdefault(smp.identity, []).append(i)
            by_name.setdefault(smp.identity.rsplit(":", 1)[1], []).append(i)
    groups = {}
    for ident, own in by_identity.items():
        others = [i for i in by_name[ident.rsplit(":", 1)[1]] if train[i].writer != train[own[0]].writer]
        if len(own) >= 2 and others:
            groups[ident] = (np.array(own), np.array(others))
    return groups


def skilled_ranking_loss(emb, group, forged, margin: float, scale: float = 10.0):
    """Soft triplet loss inside each writer block: anchor genuine, positive genuine, negative forgery.

    The margin softmax separates identities but is only indirectly told that a skilled
    forgery must score below the writer's own genuines against *their* references; this
    asks it directly, for every (anchor, positive, forgery) triple of a block.
    """
    e = tf.math.l2_normalize(emb, axis=1)
    sim = tf.matmul(e, e, transpose_b=True)
    same = tf.logical_and(tf.equal(group[:, None], group[None, :]), group[:, None] >= 0)
    gen = tf.equal(forged, 0)
    eye = tf.eye(tf.shape(e)[0], dtype=tf.bool)
    pos = tf.logical_and(tf.logical_and(same, tf.logical_not(eye)), tf.logical_and(gen[:, None], gen[None, :]))
    neg = tf.logical_and(tf.logical_and(same, gen[:, None]), tf.logical_not(gen)[None, :])
    valid = tf.logical_and(pos[:, :, None], neg[:, None, :])  # (anchor, positive, negative)
    gap = sim[:, None, :] - sim[:, :, None] + margin
    losses = tf.nn.softplus(scale * gap) / scale
    n = tf.reduce_sum(tf.cast(valid, tf.float32))
    return tf.reduce_sum(tf.where(valid, losses, 0.0)) / tf.maximum(n, 1.0)


def relational_distillation_loss(emb, teacher_emb):
    """Squared difference of the student's and the teacher's cosine similarities between the
    samples of a batch, each standardised over the batch's off-diagonal pairs.

    Relational rather than point-to-point, so the 2048-d teacher and the 128-d student need
    no projection; standardised, so the student copies which pairs the teacher finds close
    (a writer's genuines against their skilled forgeries above all) rather than its scale.
    Standardised on both sides, the loss is 2 * (1 - Pearson correlation) of the two.
    """
    def standardised(e):
        e = tf.math.l2_normalize(e, axis=1)
        sim = tf.matmul(e, e, transpose_b=True)
        off = tf.boolean_mask(sim, tf.logical_not(tf.eye(tf.shape(e)[0], dtype=tf.bool)))
        mean, var = tf.nn.moments(off, axes=[0])
        return (off - mean) * tf.math.rsqrt(var + 1e-6)

    return tf.reduce_mean(tf.square(standardised(emb) - tf.stop_gradient(standardised(teacher_emb))))


def teacher_config(run: Path, fold: int) -> dict:
    """The finished teacher run's recorded options; refuses a run of another fold (its
    training writers include this fold's validation writers)."""
    try:
        state = json.loads((run / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--teacher {run}: no readable state.json ({exc})") from None
    cfg = state.get("config")
    if state.get("phase") != "done" or not cfg or not (run / "float.h5").exists():
        raise SystemExit(f"--teacher {run}: not a finished training run with float.h5")
    if int(cfg.get("fold", "0")) != fold:
        raise SystemExit(f"--teacher {run} was trained on fold {cfg.get('fold', '0')}, not {fold}: it has seen the "
                         "validation writers")
    if cfg.get("synthetic", "0") != "0":
        raise SystemExit(f"--teacher {run} was trained on synthetic signers, not the real training writers")
    return cfg


def teacher_embeddings(run: Path, cfg: dict, train, cache: Path, out: Path) -> np.ndarray:
    """The teacher run's L2-normalised float embeddings of the training samples, each
    normalised as the teacher sees a signature at inference (no augmentation). Kept in
    ``out/teacher.npz`` with the teacher's weights hash, so a resumed run reuses them."""
    digest = sha256_file(run / "float.h5")
    saved = out / "teacher.npz"
    if saved.exists():
        with np.load(saved) as z:
            if str(z["sha256"]) == digest and len(z["embeddings"]) == len(train):
                log.info("teacher embeddings from %s", saved)
                return z["embeddings"]
    h, w = int(cfg["height"]), int(cfg["width"])
    arch = cfg.get("arch", "mobilenetv2")
    teacher = build_model(arch, h, w, float(cfg.get("alpha", "0.35")), int(cfg["dim"]))
    teacher.load_weights(run / "float.h5")
    canvases = D.preprocess(train, NormalizeOptions(height=h, width=w), cache)
    t = time.time()
    emb = embed(teacher, canvases, batch=64).astype(np.float32)
    log.info("teacher %s (%s %dx%d, %d-d): %d training signatures embedded in %.0fs", run, arch, h, w,
             emb.shape[1], len(emb), time.time() - t)
    np.savez(saved, embeddings=emb, sha256=np.array(digest))
    return emb


def load_matching_head(head, init_run: Path, args) -> None:
    """Start the margin-softmax head from the --init run's, when that run was over the same
    identities: the same real training writers (fold, --limit), not synthetic signers. The
    class count alone is no proof: two folds can have as many identities."""
    path = init_run / "head.npy"
    try:
        cfg = json.loads((init_run / "state.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        cfg = {}
    same = (cfg.get("fold", "0") == str(args.fold) and cfg.get("synthetic", "0") == "0"
            and cfg.get("limit", "0") == str(args.limit) and cfg.get("data") == str(args.data)
            and cfg.get("writer_fraction", "1.0") == str(args.writer_fraction))
    w = np.load(path) if path.exists() and same else None
    if w is None or w.shape != tuple(head.w.shape):
        log.info("the head starts afresh (%s is not over this run's identities)", init_run)
        return
    head.w.assign(w)
    log.info("head starts from %s", path)


def freeze_batch_norm(model) -> None:
    """Batch-norm layers run in inference mode from now on (moving statistics and affine fixed)."""
    import tf_keras as keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def flat(metrics: dict) -> dict:
    return {f"{ds}_{k}": v for ds, m in metrics.items() for k, v in m.items()}


def run_epoch(step, maker, steps, epoch, phase, opt, lr_fn):
    t = time.time()
    losses, accs = [], []
    for k in range(steps):
        opt.learning_rate.assign(lr_fn(epoch * steps + k))
        x, y, group, forged, idx = maker.next()
        loss, acc = step(tf.constant(x), tf.constant(y), tf.constant(group), tf.constant(forged), tf.constant(idx))
        losses.append(float(loss))
        accs.append(float(acc))
    n = steps * maker.batch
    log.info("%s epoch %d: loss %.3f acc %.3f, %.0f img/s", phase, epoch + 1, np.mean(losses), np.mean(accs),
             n / (time.time() - t))


if __name__ == "__main__":
    main()
