"""Would HOG shape features (or the contour hinge) help the shipped scorer, query rotations included?

    python benchmarks/shape_features.py --fold 0=sigedge/models/default --fold 1=runs/bg-fold1/bundle \\
        --fold 2=… --fold 3=… --out benchmarks/results/shape-features.json
    python benchmarks/shape_features.py --extra hinge --fold 0=… --out benchmarks/results/contour-hinge.json

``benchmarks/learned_scorer.py`` found that half-resolution HOG cosines (``shape16``: the HOG
of the 64×128 canvas, whole and in three regions, and the cosines of the ink-density grid and
the two ink profiles) take about a point of skilled EER off the scorer's features, measured
with upright queries. Verification scores the query at three angles and keeps the best,
which diluted the background direction's gain from 1.3 points to 0.4. This measures the HOG
the way verification would score it, before any gallery stores it: for each fold's bundle
(its embedder and its scorer's background), two logistic regressions fitted on the fold's
training writers of SigComp and SSBI exactly as ``python -m export.fit_scorer`` fits the
shipped one (5 references, 3 draws, ridge 1, collection weights), one on the shipped features
and one with the 14 shape features added (7 pair cosines averaged over the references, each
also minus the same among the references; with ``--extra hinge`` instead the chi-square distances
of the contour-hinge histograms at two fragment lengths, ``sigedge.hinge`` traced on the ink's
own outline (``stroke="ink"``), measured
on the cleaned image at a fixed ink height, turned like the query); then both score the fold's validation writers,
each query at -10, 0 and 10 degrees keeping its best log-odds, and upright only, over
``--draws`` reference draws (all other writers of the collection as random impostors).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import split_dir  # noqa: E402
from hog_baseline import hog  # noqa: E402
from learned_scorer import _cos, _region_cosines  # noqa: E402
from query_rotations import evaluate_folds  # noqa: E402

from export.fit_scorer import RIDGE, collection_weights  # noqa: E402
from export.scoring import fit_logistic, read_split, trials  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.hinge import HingeSpec, contour_hinge, hinge_distances  # noqa: E402
from sigedge.metrics import equal_error_rate  # noqa: E402
from sigedge.normalize import normalize_signature, rotate_image  # noqa: E402
from sigedge.scoring import ink_statistics, scorer_features  # noqa: E402

SEARCH = (-10.0, 0.0, 10.0)
INK_HINGE = HingeSpec(stroke="ink")
COLLECTIONS = ("sigcomp2011_dutch", "ssbi")


def shape_descriptor(canvas: np.ndarray) -> tuple[np.ndarray, ...]:
    half = cv2.resize(canvas.astype(np.float32), (128, 64), interpolation=cv2.INTER_AREA)
    return (hog(half).reshape(7, 15, 36), cv2.resize(canvas, (16, 8), interpolation=cv2.INTER_AREA).ravel(),
            canvas.sum(axis=0), canvas.sum(axis=1))


def shape_pair(a: tuple, b: tuple) -> list[float]:
    return [_cos(a[0], b[0]), _cos(a[1], b[1]), _cos(a[2], b[2]), _cos(a[3], b[3])] + _region_cosines(a[0], b[0], 1, 3)


#: Extra descriptors: name -> (describe(cleaned image at the angle, its canvas), pair features).
EXTRAS = {
    "shape16": (lambda image, canvas: shape_descriptor(canvas), shape_pair),
    # the hinge traced on the ink's own outline (``stroke="ink"``), as benchmarks/crossfit_scorer.py measured it
    "hinge": (lambda image, canvas: contour_hinge(image, INK_HINGE),
              lambda a, b: hinge_distances(a, b, INK_HINGE).tolist()),
}


class Described:
    """Embeddings, ink statistics and extra descriptors of a split's usable images, at angles."""

    def __init__(self, pipe: Pipeline, rows: list, angles: tuple[float, ...], extra: str = "shape16"):
        self.extra = extra
        describe = EXTRAS[extra][0]
        self.emb, self.ink, self.shape = [[] for _ in angles], [[] for _ in angles], [[] for _ in angles]
        self.writers, self.kinds = [], []
        for path, writer, kind in rows:
            try:
                cleaned = pipe._cleaned(path)
                feats = []
                for angle in angles:
                    img = cleaned if angle == 0.0 else rotate_image(cleaned, angle)
                    canvas = normalize_signature(img, pipe.normalize_options).canvas
                    feats.append((pipe.embed_canvas(canvas), ink_statistics(canvas), describe(img, canvas)))
            except SigedgeError:
                continue
            for a, (e, k, s) in enumerate(feats):
                self.emb[a].append(e)
                self.ink[a].append(k)
                self.shape[a].append(s)
            self.writers.append(writer)
            self.kinds.append(kind)
        self.emb = [np.stack(e) for e in self.emb]
        self.ink = [np.stack(k) for k in self.ink]


def trial_features(pipe: Pipeline, d: Described, refs_at: int, seed: int, angle: int, max_random: int,
                   with_extra: bool, refs: int = 5) -> tuple[np.ndarray, np.ndarray]:
    cols = pipe.scorer.columns
    r_emb, r_ink, r_shape = d.emb[refs_at], d.ink[refs_at], d.shape[refs_at]
    q_emb, q_ink, q_shape = d.emb[angle], d.ink[angle], d.shape[angle]

    def features(chosen, rows):
        x = scorer_features(q_emb[rows], q_ink[rows][:, cols], r_emb[chosen], r_ink[chosen][:, cols],
                            background=pipe.scorer.background)
        if not with_extra:
            return x
        extra_pair = EXTRAS[d.extra][1]
        own = np.mean([extra_pair(r_shape[i], r_shape[j]) for n, i in enumerate(chosen) for j in chosen[n + 1:]],
                      axis=0)
        pair = np.array([np.mean([extra_pair(q_shape[q], r_shape[c]) for c in chosen], axis=0) for q in rows])
        return np.hstack([x, pair, pair - own])

    x, kind, _ = trials(d.emb[refs_at], d.writers, d.kinds, refs, seed, max_random=max_random, features=features)
    return x, kind


def evaluate_fold(fold: int, bundle: Path, draws: int, extra: str = "shape16") -> dict:
    pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
    if pipe.scorer is None or pipe.scorer.background is None:
        raise SystemExit(f"{bundle}: needs a scorer with a background (python -m export.fit_scorer --background)")
    split = split_dir(fold)
    train = [Described(pipe, read_split(split / f"{c}_train.csv"), (0.0,), extra) for c in COLLECTIONS]
    val = {c: Described(pipe, read_split(split / f"{c}_val.csv"), SEARCH, extra) for c in COLLECTIONS}
    up = SEARCH.index(0.0)
    out: dict = {"fold": fold, "bundle": str(bundle), "draws": draws}
    for name, with_extra in (("shipped features", False), (f"+ {extra}", True)):
        parts = [[trial_features(pipe, d, 0, 1000 + s, 0, 40, with_extra) for s in range(3)] for d in train]
        x = np.vstack([p[0] for per in parts for p in per])
        kind = np.concatenate([p[1] for per in parts for p in per])
        weight = collection_weights([np.concatenate([p[1] for p in per]) for per in parts])
        coef, intercept = fit_logistic(x, (kind == "genuine").astype(float), weight, l2=RIDGE)
        result = {}
        for coll, d in val.items():
            runs = {"search": [], "upright": []}
            for seed in range(draws):
                per_angle = [trial_features(pipe, d, up, seed, a, 10 ** 6, with_extra) for a in range(len(SEARCH))]
                z = np.stack([f @ coef + intercept for f, _ in per_angle])
                k = per_angle[0][1]
                for rule, score in (("search", z.max(axis=0)), ("upright", z[up])):
                    runs[rule].append([equal_error_rate(score[k == "genuine"], score[k == "skilled"])[0],
                                       equal_error_rate(score[k == "genuine"], score[k == "random"])[0]])
            result[coll] = {rule: dict(zip(("eer_skilled", "eer_random"), np.mean(v, axis=0).tolist()))
                            for rule, v in runs.items()}
        out[name] = result
    return out


def show(k: int, fold: dict) -> None:
    for name in [n for n in fold if n == "shipped features" or n.startswith("+ ")]:
        print(f"fold {k} {name:17s} " + "  ".join(
            f"{c[:8]} {rule} {100 * v['eer_skilled']:.2f}/{100 * v['eer_random']:.2f}"
            for c, per in fold[name].items() for rule, v in per.items()), flush=True)


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--extra", choices=sorted(EXTRAS), default="shape16")
    known, rest = pre.parse_known_args(argv)
    extra = known.extra
    args, folds = evaluate_folds(__doc__, rest, functools.partial(evaluate_fold, extra=extra), show)
    mean = {name: {c: {rule: {m: float(np.mean([f[name][c][rule][m] for f in folds]))
                              for m in ("eer_skilled", "eer_random")} for rule in ("search", "upright")}
                   for c in COLLECTIONS} for name in ("shipped features", f"+ {extra}")}
    for name, per in mean.items():
        print(f"mean {name:17s} " + "  ".join(f"{c[:8]} {rule} {100 * v['eer_skilled']:.2f}/{100 * v['eer_random']:.2f}"
                                             for c, r in per.items() for rule, v in r.items()))
    if args.out:
        args.out.write_text(json.dumps({"folds": folds, "mean": mean, "search_angles": list(SEARCH), "extra": extra}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
