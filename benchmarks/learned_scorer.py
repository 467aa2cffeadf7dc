"""A learned writer-independent scorer over compact pair features, cross-validated by writer fold.

    python benchmarks/learned_scorer.py --out benchmarks/results/learned-scorer.json
    python benchmarks/learned_scorer.py --embedder 0=sigedge/models/default   # adds the int8 cosine on fold 0

The question: how much of the embedder's skilled-forgery error is the *scoring* (one cosine
against a global threshold) rather than the features? A dichotomy classifier answers it
cheaply. Each (query, 5 references) trial becomes a short vector of pair features, averaged
over the references, next to the same features among the references themselves (so the
classifier can learn a per-writer normalisation: "closer than this writer's own references
are to each other"). A logistic regression, trained on the fold's *training* writers only
(sigcomp2011_dutch and ssbi, genuine vs skilled and random impostors), scores the fold's
validation writers with the protocol of ``sigedge evaluate`` (5 seeded references per
writer, the rest of the writer's genuines, its skilled forgeries, and other writers'
genuines as random impostors; several reference draws).

Pair features, on the canvases the embedder sees (``sigedge.normalize``, after cleaning):

* ``shape``: HOG cosine at two scales, over the whole canvas and over a grid of regions;
  cosines of the ink-density grid and of the horizontal and vertical ink profiles;
* ``scalar``: differences of ink aspect ratio, ink fraction, stroke width (ink area over
  contour length) and number of connected components;
* ``ink``: difference of the mean (per-image stretched) ink darkness, a pen-pressure / pen
  cue. It is reported separately because it may be a property of how a collection was
  gathered (which pens the forgers used) rather than of forgeries in general.
* ``int8`` (``--embedder K=BUNDLE``): the bundle's embedder cosine, for the folds given.
  Those weights saw the fold's training writers, so the classifier sees their cosines
  higher than any unseen writer's; that makes the result pessimistic, never optimistic.

Methods compared on the same trials: ``hog`` (HOG + cosine, the baseline of
``benchmarks/hog_baseline.py``), ``hog-shift`` (the same minus the references' mean cosine
to each other: a fixed per-writer normalisation), and the classifier on ``shape``,
``shape+scalar``, ``shape+scalar+ink`` (and, where ``int8`` is given, ``int8`` alone,
``int8+scalar``, ``int8+shape``, ``int8+shape+scalar``, ``int8+shape+scalar+ink``; and
next to the shipped scorer's own choice, ``int8+geo`` (the cosine with the ink's aspect ratio
and connected regions): ``+shape``, ``+shape16`` (the half-resolution HOG and the profiles
only, a fifth of the storage), ``+spread`` (the closest and farthest reference's cosine and
the cosine to the references' centroid) and, with ``--background``, ``+wd`` / ``+wdraw``
(``benchmarks/writer_models.py``'s per-writer direction against the fold's training writers).

The regression is ``export.scoring``'s logistic regression, here with a ridge penalty (1 on
standardised features) because the feature sets are wide and nearly collinear. The
``learned:int8`` row has the two quantities of the per-writer normalisation (the cosine, and
the cosine minus the references' agreement); with this penalty and the embedder's own
training writers, whose agreement hardly varies, its two weights come out equal by way of
the penalty, not the data. ``export/scoring.py`` fits that normalisation's strength with a
token penalty only, preferably on writers the embedder never saw; it is not shipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hog_baseline import hog  # noqa: E402

from export.scoring import class_weights, fit_logistic  # noqa: E402

from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.clean import clean_signature  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.metrics import equal_error_rate, frr_at_far  # noqa: E402
from sigedge.normalize import NormalizeOptions, normalize_signature  # noqa: E402
from sigedge.scoring import ink_statistics  # noqa: E402

log = logging.getLogger("learned_scorer")
SPLITS = ROOT / "training" / "splits"
COLLECTIONS = ("sigcomp2011_dutch", "ssbi")
SHAPE = ["hog8", "hog16", "density", "x_profile", "y_profile"] + [f"hog8_r{i}" for i in range(8)] + \
    [f"hog16_r{i}" for i in range(3)]
SCALAR = ["aspect", "ink_fraction", "stroke_width", "components"]
SPREAD = ["int8_max", "int8_min", "int8_centroid"]
GEO = ["aspect", "components"]  # the two ink statistics the shipped scorer uses
# the half-resolution part of SHAPE only: about a fifth of its size to store per reference
SHAPE16 = ["hog16", "density", "x_profile", "y_profile"] + [f"hog16_r{i}" for i in range(3)]
INK = ["darkness"]
GROUPS = {"shape": SHAPE, "shape+scalar": SHAPE + SCALAR, "shape+scalar+ink": SHAPE + SCALAR + INK}


@dataclass
class Signature:
    """What the pair features need of one image."""

    hog8: np.ndarray     # (15, 31, 36) HOG blocks of the 128x256 canvas
    hog16: np.ndarray    # (7, 15, 36) the same at half resolution
    density: np.ndarray  # 8x16 ink density grid
    x_profile: np.ndarray
    y_profile: np.ndarray
    aspect: float        # the four of sigedge.scoring.ink_statistics (logarithms):
    ink_fraction: float  # width / height of the ink, ink fraction, stroke width
    stroke_width: float  # (ink pixels / contour pixels) and number of connected
    components: float    # components
    darkness: float      # mean stretched ink level
    embedding: np.ndarray | None = None


def describe(image: np.ndarray) -> Signature:
    canvas = normalize_signature(clean_signature(image), NormalizeOptions(height=128, width=256)).canvas
    canvas = canvas.astype(np.float32)
    ink = canvas > 0.05
    aspect, ink_fraction, stroke_width, components = (float(v) for v in ink_statistics(canvas))
    half = cv2.resize(canvas, (128, 64), interpolation=cv2.INTER_AREA)
    return Signature(
        hog8=hog(canvas).reshape(15, 31, 36), hog16=hog(half).reshape(7, 15, 36),
        density=cv2.resize(canvas, (16, 8), interpolation=cv2.INTER_AREA).ravel(),
        x_profile=canvas.sum(axis=0), y_profile=canvas.sum(axis=1),
        aspect=aspect, ink_fraction=ink_fraction, stroke_width=stroke_width, components=components,
        darkness=float(canvas[ink].mean()))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def _region_cosines(a: np.ndarray, b: np.ndarray, rows: int, cols: int) -> list[float]:
    h, w = a.shape[:2]
    return [_cos(a[i * h // rows:(i + 1) * h // rows, j * w // cols:(j + 1) * w // cols],
                 b[i * h // rows:(i + 1) * h // rows, j * w // cols:(j + 1) * w // cols])
            for i in range(rows) for j in range(cols)]


def pair_features(a: Signature, b: Signature) -> dict[str, float]:
    """Similarities (shape, int8: higher is closer) and differences (scalar, ink: lower is)."""
    f = dict(zip(SHAPE, [_cos(a.hog8, b.hog8), _cos(a.hog16, b.hog16), _cos(a.density, b.density),
                         _cos(a.x_profile, b.x_profile), _cos(a.y_profile, b.y_profile)]
                 + _region_cosines(a.hog8, b.hog8, 2, 4) + _region_cosines(a.hog16, b.hog16, 1, 3)))
    f.update(aspect=abs(a.aspect - b.aspect), ink_fraction=abs(a.ink_fraction - b.ink_fraction),
             stroke_width=abs(a.stroke_width - b.stroke_width), components=abs(a.components - b.components),
             darkness=abs(a.darkness - b.darkness))
    if a.embedding is not None and b.embedding is not None:
        f["int8"] = float(a.embedding @ b.embedding)
    return f


def mean_features(pairs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([p[k] for p in pairs])) for k in pairs[0]}


def spread_features(query: Signature, refs: list[Signature]) -> dict[str, float]:
    """How the query's embedding cosines spread over the references, beyond their mean: the
    closest and farthest reference, and the cosine to the references' centroid."""
    if query.embedding is None or any(r.embedding is None for r in refs):
        return {}
    emb = np.stack([r.embedding for r in refs])
    cos = emb @ query.embedding
    centroid = emb.mean(axis=0)
    return {"int8_max": float(cos.max()), "int8_min": float(cos.min()),
            "int8_centroid": float(centroid @ query.embedding / (np.linalg.norm(centroid) + 1e-9))}


def direction_features(query: Signature, refs: list[Signature], bg) -> dict[str, float]:
    """``benchmarks/writer_models.py``'s per-writer direction against a background (``bg``,
    its ``Background``): the query's projection on it (``int8_wdraw``) and the same
    standardised by the references' own projections (``int8_wd``)."""
    if bg is None or query.embedding is None:
        return {}
    ref_emb = np.stack([r.embedding for r in refs])
    (proj_q,), _ = bg.fitted.projections(query.embedding[None], ref_emb)
    proj_r, _ = bg.fitted.projections(ref_emb, ref_emb)
    return {"int8_wdraw": float(proj_q), "int8_wd": float((proj_q - proj_r.mean()) / (proj_r.std() + 0.05))}


def own_direction(refs: list[Signature], bg) -> dict[str, float]:
    """The references' own mean projection on their direction (standardised, 0 by construction)."""
    if bg is None or refs[0].embedding is None:
        return {}
    ref_emb = np.stack([r.embedding for r in refs])
    return {"int8_wdraw": bg.fitted.projections(ref_emb, ref_emb)[1], "int8_wd": 0.0}


def own_spread(refs: list[Signature]) -> dict[str, float]:
    """The same quantities among the references: each against the others, averaged."""
    if len(refs) < 2 or any(r.embedding is None for r in refs):
        return {}
    rows = [spread_features(r, refs[:i] + refs[i + 1:]) for i, r in enumerate(refs)]
    return mean_features(rows)


@dataclass
class Trials:
    """Protocol trials: for each, the query-to-references features and the references' own."""

    query: list[dict[str, float]]
    own: list[dict[str, float]]
    kind: list[str]        # genuine / skilled / random
    collection: list[str]

    def matrix(self, names: list[str]) -> np.ndarray:
        q = np.array([[t[n] for n in names] for t in self.query])
        o = np.array([[t[n] for n in names] for t in self.own])
        return np.hstack([q, q - o])


def make_trials(sigs: dict[str, Signature], rows: list[dict], refs: int, seed: int,
                max_random: int | None = None, bg=None) -> Trials:
    """The protocol of ``sigedge evaluate`` on these rows (random impostors: same collection)."""
    rng = np.random.default_rng(seed)
    by_writer: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["path"] in sigs:
            by_writer.setdefault((r["collection"], r["writer"]), []).append(r)
    genuine = {k: [r["path"] for r in v if r["kind"] == "genuine"] for k, v in by_writer.items()}
    out = Trials([], [], [], [])
    for (coll, writer), members in sorted(by_writer.items()):
        gen = genuine[coll, writer]
        if len(gen) <= refs:
            continue
        chosen = [gen[i] for i in sorted(rng.choice(len(gen), refs, replace=False))]
        ref_sigs = [sigs[p] for p in chosen]
        own = mean_features([pair_features(ref_sigs[i], ref_sigs[j])
                             for i in range(refs) for j in range(i + 1, refs)]) | own_spread(ref_sigs) \
            | own_direction(ref_sigs, bg)
        randoms = [p for (c, w), g in sorted(genuine.items()) if c == coll and w != writer for p in g]
        if max_random is not None and len(randoms) > max_random:
            randoms = [randoms[i] for i in sorted(rng.choice(len(randoms), max_random, replace=False))]
        queries = ([(p, "genuine") for p in gen if p not in chosen]
                   + [(r["path"], "skilled") for r in members if r["kind"] == "forgery"]
                   + [(p, "random") for p in randoms])
        for path, kind in queries:
            out.query.append(mean_features([pair_features(sigs[path], s) for s in ref_sigs])
                             | spread_features(sigs[path], ref_sigs) | direction_features(sigs[path], ref_sigs, bg))
            out.own.append(own)
            out.kind.append(kind)
            out.collection.append(coll)
    return out


def read_fold(fold: int) -> dict[str, list[dict]]:
    split = SPLITS if fold == 0 else SPLITS / f"fold{fold}"
    parts: dict[str, list[dict]] = {"train": [], "val": []}
    for part in parts:
        for coll in COLLECTIONS:
            with open(split / f"{coll}_{part}.csv", newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    parts[part].append({"path": str((split / r["path"]).resolve()), "writer": r["writer"],
                                        "kind": r["kind"], "collection": coll})
    return parts


def describe_all(paths: list[str]) -> dict[str, Signature]:
    sigs = {}
    for i, p in enumerate(paths):
        try:
            sigs[p] = describe(load_image(p))
        except SigedgeError as e:  # no ink: left out of every trial, and counted
            log.warning("%s: %s", p, e)
        if i % 400 == 0:
            log.info("described %d/%d", i, len(paths))
    return sigs


def rates(scores: np.ndarray, kind: np.ndarray) -> dict:
    g, s, r = scores[kind == "genuine"], scores[kind == "skilled"], scores[kind == "random"]
    return {"eer_skilled": equal_error_rate(g, s)[0], "eer_random": equal_error_rate(g, r)[0],
            "frr_at_far1_skilled": frr_at_far(g, s, 0.01), "n": [len(g), len(s), len(r)]}


def evaluate_fold(fold: int, sigs: dict[str, Signature], draws: int, refs: int, with_int8: bool, bg=None) -> dict:
    parts = read_fold(fold)
    train = [make_trials(sigs, parts["train"], refs, 1000 + d, max_random=40, bg=bg) for d in range(3)]
    val = [make_trials(sigs, parts["val"], refs, d, bg=bg) for d in range(draws)]
    groups = dict(GROUPS)
    if with_int8:
        groups.update({"int8": ["int8"], "int8+scalar": ["int8"] + SCALAR, "int8+shape": ["int8"] + SHAPE,
                       "int8+shape+scalar": ["int8"] + SHAPE + SCALAR,
                       "int8+shape+scalar+ink": ["int8"] + SHAPE + SCALAR + INK,
                       "int8+geo": ["int8"] + GEO, "int8+shape+geo": ["int8"] + SHAPE + GEO,
                       "int8+shape16+geo": ["int8"] + SHAPE16 + GEO,
                       "int8+spread+geo": ["int8"] + SPREAD + GEO,
                       "int8+spread+shape16+geo": ["int8"] + SPREAD + SHAPE16 + GEO})
    if with_int8 and bg is not None:
        groups.update({"int8+wd+geo": ["int8", "int8_wd"] + GEO, "int8+wdraw+geo": ["int8", "int8_wdraw"] + GEO,
                       "int8+wd+wdraw+geo": ["int8", "int8_wd", "int8_wdraw"] + GEO,
                       "int8+wd+wdraw+shape16+geo": ["int8", "int8_wd", "int8_wdraw"] + SHAPE16 + GEO})
    methods = {"hog": lambda t: np.array([q["hog8"] for q in t.query]),
               "hog-shift": lambda t: np.array([q["hog8"] - o["hog8"] for q, o in zip(t.query, t.own)])}
    if with_int8:
        methods["int8"] = lambda t: np.array([q["int8"] for q in t.query])
    kind_train = np.concatenate([t.kind for t in train])
    for name, names in groups.items():
        x = np.vstack([t.matrix(names) for t in train])
        coef, intercept = fit_logistic(x, (kind_train == "genuine").astype(float), class_weights(kind_train))
        methods[f"learned:{name}"] = lambda t, c=coef, b=intercept, n=names: t.matrix(n) @ c + b
    result: dict = {"fold": fold, "train_trials": int(len(kind_train)), "methods": {}}
    for name, score in methods.items():
        per_coll = {}
        for coll in COLLECTIONS:
            runs = []
            for t in val:
                mask = np.array(t.collection) == coll
                runs.append(rates(score(t)[mask], np.array(t.kind)[mask]))
            per_coll[coll] = {"eer_skilled": float(np.mean([r["eer_skilled"] for r in runs])),
                              "eer_random": float(np.mean([r["eer_random"] for r in runs])),
                              "frr_at_far1_skilled": float(np.mean([r["frr_at_far1_skilled"] for r in runs])),
                              "eer_skilled_draw0": runs[0]["eer_skilled"], "eer_random_draw0": runs[0]["eer_random"],
                              "trials_draw0": runs[0]["n"]}
        result["methods"][name] = per_coll
    return result


def fold_background(fold: int, pipe, sigs: dict[str, Signature], shrink: float):
    """``writer_models.Background`` of the fold's training writers' genuines (all collections)."""
    from writer_models import Background, read_background

    rows, vectors = [], []
    for r in read_background(fold):
        if r["path"] in sigs:
            vectors.append(sigs[r["path"]].embedding)
        else:
            try:
                vectors.append(pipe.embed(load_image(r["path"])))
            except SigedgeError:
                continue
        rows.append(r["writer"])
    return Background(np.stack(vectors).astype(np.float64), rows, shrink)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", default="0,1,2,3")
    ap.add_argument("--draws", type=int, default=3, help="reference draws per writer (seeds 0..N-1)")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--embedder", action="append", default=[], metavar="K=BUNDLE",
                    help="add this bundle's int8 cosine as a feature on fold K")
    ap.add_argument("--background", action="store_true",
                    help="add benchmarks/writer_models.py's per-writer direction against the fold's "
                         "training writers (int8_wd, int8_wdraw) as features")
    ap.add_argument("--shrink", type=float, default=0.1, help="its whitening's ridge")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folds = [int(k) for k in args.folds.split(",")]
    bundles = {int(k): v for k, v in (e.split("=", 1) for e in args.embedder)}
    paths = sorted({r["path"] for k in folds for part in read_fold(k).values() for r in part})
    t0 = time.perf_counter()
    base = describe_all(paths)
    log.info("described %d images in %.0f s", len(base), time.perf_counter() - t0)
    report = {"command": "python benchmarks/learned_scorer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "refs": args.refs, "draws": args.draws, "folds": []}
    for k in folds:
        sigs, bg = base, None
        if k in bundles:
            pipe = Pipeline(bundles[k], PipelineOptions(precision="int8"))
            sigs = {}
            for p, s in base.items():
                sigs[p] = Signature(**{**s.__dict__, "embedding": pipe.embed(load_image(p))})
            if args.background:
                bg = fold_background(k, pipe, sigs, args.shrink)
        fold = evaluate_fold(k, sigs, args.draws, args.refs, k in bundles, bg)
        report["folds"].append(fold)
        for name, per in fold["methods"].items():
            print(f"fold {k} {name:28s} " + "  ".join(
                f"{c[:8]} skilled {100 * v['eer_skilled']:5.1f} random {100 * v['eer_random']:5.1f}"
                for c, v in per.items()), flush=True)
    names = sorted({n for f in report["folds"] for n in f["methods"]})
    report["mean"] = {}
    for n in names:
        have = [f for f in report["folds"] if n in f["methods"]]
        report["mean"][n] = {"folds": [f["fold"] for f in have], **{
            c: {m: float(np.mean([f["methods"][n][c][m] for f in have]))
                for m in ("eer_skilled", "eer_random", "frr_at_far1_skilled", "eer_skilled_draw0")}
            for c in COLLECTIONS}}
        print(f"mean {n:28s} folds {report['mean'][n]['folds']} " + "  ".join(
            f"{c[:8]} skilled {100 * report['mean'][n][c]['eer_skilled']:5.1f} "
            f"random {100 * report['mean'][n][c]['eer_random']:5.1f}" for c in COLLECTIONS))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
