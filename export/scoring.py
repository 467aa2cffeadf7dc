"""Fit a bundle's per-writer score normalisation and recalibrate its thresholds (no TensorFlow).

    python -m export.scoring --bundle sigedge/models/default

1. Embeds the *training* writers of sigcomp2011_dutch and ssbi (``training/splits/*_train.csv``)
   with the bundle's int8 embedder, through the runtime (cleaning and normalisation as
   ``sigedge verify`` does them).
2. Builds protocol trials on them (5 references, three seeded draws; the rest of the writer's
   genuines against its skilled forgeries and other writers' genuines, at most 40 a draw) and
   fits a weighted logistic regression on two features: the fused cosine ``c`` and ``c - a``,
   where ``a`` is the agreement of the references among themselves. Its decision is
   monotone in ``c - strength * a``; that strength, and the training writers' mean agreement
   as the centre, become ``verification.writer_normalisation`` in the manifest.
3. Embeds the *validation* writers of the three collections, scores them with the
   normalisation, and recalibrates the thresholds and the accept / refer / reject band on
   them (as the export does), then rewrites ``manifest.json``. Model files are untouched.
   ``identification.threshold`` is set from the plain fused cosine (random FAR 1 %), the
   score that :meth:`sigedge.Gallery.identify` ranks writers by.

``benchmarks/learned_scorer.py`` measured the idea first (its ``learned:int8`` row), with
richer features next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np

from sigedge import Pipeline, PipelineOptions
from sigedge.errors import SigedgeError
from sigedge.evaluate import protocol_scores, report_from_scores
from sigedge.scoring import WriterNormalisation, fuse_scores, reference_agreement

log = logging.getLogger("export.scoring")
ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "training" / "splits"
#: Collections with skilled forgeries: the normalisation is fitted on their training writers.
FIT_COLLECTIONS = ("sigcomp2011_dutch", "ssbi")
#: References per identity in evaluation and calibration (as ``training.data.EVAL_REFERENCES``).
EVAL_REFERENCES = {"sigcomp2011_dutch": 5, "ssbi": 5, "cross_media_chinese": 2}


def read_split(path: Path) -> list[tuple[Path, str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(path.parent / r["path"], r["writer"], r["kind"]) for r in csv.DictReader(f)]


def embed_rows(pipe: Pipeline, rows: list[tuple[Path, str, str]]) -> tuple[np.ndarray, list[str], list[str]]:
    vectors, writers, kinds = [], [], []
    for path, writer, kind in rows:
        try:
            vectors.append(pipe.embed(path))
        except SigedgeError as exc:  # an image with no ink: left out, as sigedge evaluate does
            log.warning("skipped %s: %s", path, exc)
            continue
        writers.append(writer)
        kinds.append(kind)
    return np.stack(vectors), writers, kinds


def trials(emb: np.ndarray, writers: list[str], kinds: list[str], refs: int, seed: int,
           max_random: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 2): fused cosine and fused cosine minus agreement; kind per trial)."""
    w_arr, k_arr = np.asarray(writers), np.asarray(kinds)
    rng = np.random.default_rng(seed)
    genuine = {w: np.flatnonzero((w_arr == w) & (k_arr == "genuine")) for w in sorted(set(writers))}
    eligible = [w for w, idx in genuine.items() if len(idx) > refs]
    feats: list[tuple[float, float]] = []
    labels: list[str] = []
    for w in eligible:
        chosen = rng.choice(genuine[w], refs, replace=False)
        ref = emb[chosen]
        agreement = reference_agreement(ref)
        randoms = np.concatenate([genuine[o] for o in eligible if o != w])
        randoms = rng.choice(randoms, min(max_random, len(randoms)), replace=False)
        for kind, rows in (("genuine", np.setdiff1d(genuine[w], chosen)),
                           ("skilled", np.flatnonzero((w_arr == w) & (k_arr == "forgery"))), ("random", randoms)):
            for q in rows:
                c = fuse_scores(ref @ emb[q], "mean")
                feats.append((c, c - agreement))
                labels.append(kind)
    return np.array(feats, dtype=np.float64).reshape(-1, 2), np.array(labels, dtype=str)


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1.0,
                 steps: int = 50) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised logistic regression by Newton's method; raw-feature weights."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-12
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    beta = np.zeros(z.shape[1])
    penalty = np.r_[np.full(z.shape[1] - 1, l2), 0.0]
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-z @ beta))
        grad = z.T @ (weight * (p - y)) + penalty * beta
        hess = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    coef = beta[:-1] / sd
    return coef, float(beta[-1] - coef @ mu)


def class_weights(kind: np.ndarray) -> np.ndarray:
    """Genuine trials weigh as much as all impostors; skilled and random half of that each."""
    n_genuine = (kind == "genuine").sum()
    w = np.ones(len(kind))
    for k in ("skilled", "random"):
        w[kind == k] = n_genuine / max((kind == k).sum(), 1) / 2
    return w


def fit_normalisation(sets: list[tuple[np.ndarray, list[str], list[str]]], refs: int = 5,
                      draws: int = 3) -> tuple[WriterNormalisation, dict]:
    """The strength and centre from training writers' trials (several collections pooled)."""
    feats, kinds, agreements = [], [], []
    for emb, writers, kinds_ in sets:
        for d in range(draws):
            x, k = trials(emb, writers, kinds_, refs, seed=1000 + d)
            feats.append(x)
            kinds.append(k)
        agreements += [reference_agreement(emb[np.flatnonzero((np.asarray(writers) == w) &
                                                              (np.asarray(kinds_) == "genuine"))][:refs])
                       for w in sorted(set(writers))]
    if not any(len(f) for f in feats):
        raise SigedgeError(f"no training writer has more than {refs} genuine signatures to fit on")
    x, kind = np.vstack(feats), np.concatenate(kinds)
    coef, intercept = fit_logistic(x, (kind == "genuine").astype(float), class_weights(kind))
    # decision: coef[0] c + coef[1] (c - a) = (coef[0] + coef[1]) (c - strength a)
    total = coef[0] + coef[1]
    if total <= 0:
        raise SigedgeError("the fitted weights do not increase with the cosine; refusing to normalise")
    strength = float(coef[1] / total)
    centre = float(np.mean([a for a in agreements if a is not None]))
    info = {"trials": int(len(kind)), "logistic_coef": [float(c) for c in coef], "logistic_intercept": intercept}
    return WriterNormalisation(strength=strength, centre=centre), info


def calibrate_bundle(bundle: Path | None, splits: Path = SPLITS, write: bool = True, draws: int = 10) -> dict:
    """Fit, recalibrate and (with ``write``) rewrite the bundle's verification block.

    The validation report gives each EER for reference draw 0 (seed 0, the draw ``sigedge
    evaluate`` uses) and its mean over ``draws`` seeded draws: with 11 writers a collection,
    one draw moves the skilled EER by a few points."""
    from export.export_embedder import calibrate, decision_band

    pipe = Pipeline(bundle, PipelineOptions(precision="int8"))
    train = [embed_rows(pipe, read_split(splits / f"{c}_train.csv")) for c in FIT_COLLECTIONS]
    norm, info = fit_normalisation(train)
    log.info("writer normalisation: strength %.3f, centre %.3f (%s)", norm.strength, norm.centre, info)
    report, scores, cosine_scores = {}, {}, {}
    for coll, refs in EVAL_REFERENCES.items():
        emb, writers, kinds = embed_rows(pipe, read_split(splits / f"{coll}_val.csv"))
        entry = {}
        for name, n in (("cosine", None), ("normalised", norm)):
            runs = [protocol_scores(emb, writers, kinds, refs, seed=d, normalisation=n) for d in range(draws)]
            reps = [report_from_scores(ps, refs) for ps in runs]
            entry[name] = {"eer_skilled": reps[0].eer_skilled, "eer_random": reps[0].eer_random}
            if reps[0].eer_skilled is not None:
                entry[name]["eer_skilled_mean_of_draws"] = float(np.mean([r.eer_skilled for r in reps]))
            entry[name]["eer_random_mean_of_draws"] = float(np.mean([r.eer_random for r in reps]))
            (scores if n is not None else cosine_scores)[coll] = runs[0]  # calibrated on draw 0, as the export
        report[coll] = entry
        log.info("%s (validation, %d references): %s", coll, refs, entry)
    thresholds = calibrate(scores)
    # identify ranks writers by the plain fused cosine: its threshold stays on that scale
    identify_threshold = calibrate(cosine_scores)["far_random_1pct"]
    manifest_path = pipe.bundle.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    ver = manifest.setdefault("verification", {})
    ver.update({
        "thresholds": thresholds,
        "band": decision_band(thresholds),
        "writer_normalisation": {
            "strength": norm.strength, "centre": norm.centre,
            "rule": "score = fused cosine - strength * (references' mean pairwise cosine - centre); "
                    "with one reference, the fused cosine",
            "fitted_on": "training writers of " + " and ".join(FIT_COLLECTIONS) + " (embedded by this bundle's "
                         "int8 model; logistic regression, genuine against skilled and random impostors)",
            "command": "python -m export.scoring --bundle <bundle>", **info,
            "validation_eer": report, "validation_draws": draws,
        },
    })
    manifest.setdefault("identification", {}).update({
        "threshold": identify_threshold, "score": "fused cosine (no writer normalisation)",
        "chosen_by": "random FAR 1 % on the validation writers of " + ", ".join(EVAL_REFERENCES)})
    if write:
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        log.info("rewrote %s", manifest_path)
    return ver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the packaged one)")
    ap.add_argument("--splits", type=Path, default=SPLITS, help="folder of the split CSVs (e.g. training/splits/fold1)")
    ap.add_argument("--dry-run", action="store_true", help="fit and report, but leave the manifest alone")
    ap.add_argument("--draws", type=int, default=10, help="reference draws the validation EERs are averaged over")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ver = calibrate_bundle(args.bundle, args.splits, write=not args.dry_run, draws=args.draws)
    print(json.dumps(ver["writer_normalisation"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
