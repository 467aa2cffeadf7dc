"""Fit a bundle's per-writer score normalisation and recalibrate its thresholds (no TensorFlow).

    # fold 0 (the packaged bundle), fitted on fold 1's validation writers embedded by fold 1's
    # embedder (the same recipe trained without them): the fit sees writers new to the model
    # that embeds them, as verification does; thresholds stay on fold 0's validation writers
    python -m export.scoring --bundle sigedge/models/default \
        --fit-bundle runs/embedder-fold1/bundle --fit-splits training/splits/fold1 --fit-part val
    # or measure it on the bundle's own validation writers, cross-fitted, without writing
    python -m export.scoring --dry-run --fit-part val

The packaged bundle does not state a normalisation yet (the model card's "Scoring" section
says why); a bundle whose manifest states one is scored with it by ``Pipeline.verify``.

1. Embeds the fit writers (sigcomp2011_dutch and ssbi, ``--fit-part`` of ``--fit-splits``) with
   the ``--fit-bundle`` int8 embedder, through the runtime (cleaning and normalisation as
   ``sigedge verify`` does them). They should be writers that embedder never saw: on its own
   training writers the references of every writer agree almost alike, and the strength is
   barely determined (a wide bootstrap interval), and writing such a fit is refused; any fit
   whose interval reaches 0 is refused.
2. Builds protocol trials on them (5 references, three seeded draws; the rest of the writer's
   genuines against its skilled forgeries and other writers' genuines, at most 40 a draw) and
   fits a weighted logistic regression on the fused cosine ``c`` and the agreement ``a`` of
   the references among themselves. Its decision is monotone in ``c - strength * a``; that
   strength (with a bootstrap interval over writers), and the fit writers' mean agreement as
   the centre, become ``verification.writer_normalisation`` in the manifest.
3. Embeds the *validation* writers of the three collections (``--splits``) with the bundle's
   own embedder, scores them with the normalisation, and recalibrates the thresholds and
   the accept / refer / reject band on them (as the export does), then rewrites
   ``manifest.json``. Model files are untouched. ``identification.threshold`` is set from
   the plain fused cosine (random FAR 1 %), the score :meth:`sigedge.Gallery.identify`
   ranks writers by.

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
from typing import Callable

import numpy as np

from sigedge import Pipeline, PipelineOptions
from sigedge.errors import SigedgeError, UsageError
from sigedge.evaluate import protocol_scores
from sigedge.evaluate_cli import over_draws
from sigedge.scoring import WriterNormalisation, fuse_scores, reference_agreement

log = logging.getLogger("export.scoring")
ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "training" / "splits"
#: Collections with skilled forgeries: the normalisation is fitted on their writers.
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
           max_random: int = 40, features: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Protocol trials: features (N, F), the kind of each trial, and the writer it was scored
    against. ``features(reference_rows, query_rows)`` gives the features of those queries; by
    default (F = 2) the fused cosine and the references' agreement."""
    w_arr, k_arr = np.asarray(writers), np.asarray(kinds)
    rng = np.random.default_rng(seed)
    genuine = {w: np.flatnonzero((w_arr == w) & (k_arr == "genuine")) for w in sorted(set(writers))}
    eligible = [w for w, idx in genuine.items() if len(idx) > refs]
    feats: list[np.ndarray] = []
    labels: list[str] = []
    claimed: list[str] = []
    for w in eligible:
        chosen = rng.choice(genuine[w], refs, replace=False)
        randoms = np.concatenate([genuine[o] for o in eligible if o != w])
        randoms = rng.choice(randoms, min(max_random, len(randoms)), replace=False)
        for kind, rows in (("genuine", np.setdiff1d(genuine[w], chosen)),
                           ("skilled", np.flatnonzero((w_arr == w) & (k_arr == "forgery"))), ("random", randoms)):
            if len(rows) == 0:
                continue
            feats.append(features(chosen, rows) if features is not None else _cosine_agreement(emb, chosen, rows))
            labels += [kind] * len(rows)
            claimed += [w] * len(rows)
    width = feats[0].shape[1] if feats else 2
    return (np.vstack(feats) if feats else np.zeros((0, width)), np.array(labels, dtype=str),
            np.array(claimed, dtype=str))


def _cosine_agreement(emb: np.ndarray, chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
    ref = emb[chosen]
    fused = [fuse_scores(ref @ emb[q], "mean") for q in rows]
    return np.column_stack([fused, np.full(len(rows), reference_agreement(ref))]).astype(np.float64)


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


def _strength(x: np.ndarray, kind: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(strength, raw coefficients, intercept) of the logistic regression on (cosine, agreement).

    Its decision ``b_c * c + b_a * a`` is monotone in ``c - strength * a`` with
    ``strength = -b_a / b_c``. Only a token penalty (1e-3), so that the data, not the
    regulariser, set the weights."""
    coef, intercept = fit_logistic(x, (kind == "genuine").astype(float), class_weights(kind), l2=1e-3)
    if coef[0] <= 0:
        raise SigedgeError("the fitted weights do not increase with the cosine; refusing to normalise")
    return float(-coef[1] / coef[0]), coef, intercept


def fit_normalisation(sets: list[tuple[np.ndarray, list[str], list[str]]], refs: int = 5, draws: int = 3,
                      resamples: int = 200, seed: int = 0, strict: bool = True) -> tuple[WriterNormalisation, dict]:
    """The strength and centre from the trials of the given writers (several collections pooled).

    The writers should be ones the embedder never saw: on its own training writers the
    references agree almost uniformly (their agreement varies too little to learn from). A
    bootstrap over writers gives the strength's 90 % interval; the fit is refused when that
    interval reaches 0 (the writers cannot tell whether to normalise at all), unless not
    ``strict`` (the halves of a cross-fit, where a point estimate is what is measured)."""
    feats, kinds, groups = [], [], []
    for i, (emb, writers, kinds_) in enumerate(sets):
        for d in range(draws):
            x, k, w = trials(emb, writers, kinds_, refs, seed=1000 + d)
            feats.append(x)
            kinds.append(k)
            groups.append(np.char.add(f"{i}:", w))
    if not any(len(f) for f in feats):
        raise SigedgeError(f"no writer has more than {refs} genuine signatures to fit on")
    x, kind, group = np.vstack(feats), np.concatenate(kinds), np.concatenate(groups)
    strength, coef, intercept = _strength(x, kind)
    names = np.unique(group)
    if not strict:  # a cross-fit half: the point estimate is what is measured
        return (WriterNormalisation(strength=strength, centre=float(x[:, 1].mean())),
                {"trials": int(len(kind)), "writers": int(len(names))})
    rng = np.random.default_rng(seed)
    members = {g: np.flatnonzero(group == g) for g in names}
    boot = []
    for _ in range(resamples):
        rows = np.concatenate([members[g] for g in rng.choice(names, len(names), replace=True)])
        try:
            boot.append(_strength(x[rows], kind[rows])[0])
        except SigedgeError:
            boot.append(-1e9)  # a resample where the cosine does not even help: far below 0
    low, high = (float(v) for v in np.percentile(boot, [5, 95]))
    info = {"trials": int(len(kind)), "writers": int(len(names)),
            "agreement_sd": float(x[:, 1].std()), "strength_interval_90": [low, high],
            "logistic_coef": [float(c) for c in coef], "logistic_intercept": float(intercept)}
    if not low > 0.0:
        raise SigedgeError(f"these writers do not determine the strength: {strength:.3f}, 90 % interval "
                           f"[{low:.3f}, {high:.3f}] (agreement sd {info['agreement_sd']:.3f}); fit on "
                           "writers the embedder never saw (--fit-bundle / --fit-splits)")
    centre = float(x[:, 1].mean())  # the fit trials' mean agreement: for a typical writer the score is the cosine
    return WriterNormalisation(strength=strength, centre=centre), info


def calibrate_bundle(bundle: Path | None, splits: Path = SPLITS, write: bool = True, draws: int = 10,
                     fit_bundle: Path | None = None, fit_splits: Path | None = None, fit_part: str = "train",
                     command: str = "python -m export.scoring") -> dict:
    """Fit, recalibrate and (with ``write``) rewrite the bundle's verification block.

    The strength is fitted on the ``fit_part`` writers of ``fit_splits`` embedded by
    ``fit_bundle`` (by default the bundle's own training writers, which its embedder saw and
    which therefore barely determine it; better another fold's validation writers, embedded
    by that fold's model, which never saw them; or this bundle's own validation writers,
    ``fit_part="val"``, in which case the report adds a cross-fitted score). Thresholds are
    recalibrated on the validation writers of ``splits``. The validation report gives each
    EER for reference draw 0 (seed 0, the draw ``sigedge evaluate`` uses) and its mean over
    ``draws`` seeded draws: with 11 writers (SigComp) or 5 (SSBI) a collection, one draw
    moves the skilled EER by a few points. Writing refuses a strength fitted on the
    embedder's own training writers."""
    from export.export_embedder import calibrate, decision_band

    pipe = Pipeline(bundle, PipelineOptions(precision="int8", scorer="cosine", query_rotations=(0.0,)))
    if pipe.fusion != "mean":
        raise UsageError(f"the normalisation is fitted for mean fusion; this bundle fuses by {pipe.fusion!r}")
    fit_pipe = pipe if fit_bundle is None else Pipeline(fit_bundle, PipelineOptions(precision="int8", scorer="cosine"))
    fit_splits = splits if fit_splits is None else fit_splits
    if write and fit_part == "train" and fit_pipe.model_sha256 == pipe.model_sha256:
        raise UsageError("refusing to write a strength fitted on the embedder's own training writers (their "
                         "references agree almost alike); fit on writers it never saw (--fit-bundle / "
                         "--fit-splits, or --fit-part val), or look with --dry-run")
    fit_sets = [embed_rows(fit_pipe, read_split(fit_splits / f"{c}_{fit_part}.csv")) for c in FIT_COLLECTIONS]
    norm, info = fit_normalisation(fit_sets)
    info["fitted_on"] = (f"the {fit_part} writers of {' and '.join(FIT_COLLECTIONS)} in {_shown(fit_splits)}, "
                         f"embedded by the int8 embedder {fit_pipe.model_sha256[:12]}")
    log.info("writer normalisation: strength %.3f, centre %.3f (%s)", norm.strength, norm.centre, info)
    # Fitted on the validation writers themselves (one scalar, as the thresholds are): the
    # report then also scores each writer with a strength fitted on the other half of them.
    cross = None
    if fit_part == "val" and fit_pipe is pipe and Path(fit_splits).resolve() == Path(splits).resolve():
        cross = cross_fitted(fit_sets)
        info["cross_fit_strengths"] = sorted({round(n.strength, 4) for n in cross.values()})
    report, scores, cosine_scores = {}, {}, {}
    for coll, refs in EVAL_REFERENCES.items():
        emb, writers, kinds = embed_rows(pipe, read_split(splits / f"{coll}_val.csv"))
        entry = {}
        variants = [("cosine", None), ("normalised", norm)]
        if cross is not None and coll in FIT_COLLECTIONS:
            variants.append(("normalised_cross_fitted", {w: n for (c, w), n in cross.items() if c == coll}))
        for name, n in variants:
            d = over_draws(emb, writers, kinds, refs, 0, draws, "mean", n)
            entry[name] = {"eer_skilled": d["eer_skilled_per_draw"][0] if d["eer_skilled_per_draw"] else None,
                           "eer_random": d["eer_random_per_draw"][0]}
            if d["eer_skilled_mean"] is not None:
                entry[name]["eer_skilled_mean_of_draws"] = d["eer_skilled_mean"]
            entry[name]["eer_random_mean_of_draws"] = d["eer_random_mean"]
            if name != "normalised_cross_fitted":  # calibrated on draw 0, as the export
                (scores if n is not None else cosine_scores)[coll] = protocol_scores(
                    emb, writers, kinds, refs, seed=0, normalisation=n)
        report[coll] = entry
        log.info("%s (validation, %d references): %s", coll, refs, entry)
    thresholds = calibrate(scores)
    # identify ranks writers by the plain fused cosine: its threshold stays on that scale
    identify_threshold = calibrate(cosine_scores)["far_random_1pct"]
    manifest_path = pipe.bundle.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    ver = manifest.setdefault("verification", {})
    # a bundle is calibrated for one scorer: the normalisation replaces a learned scorer (and
    # its thresholds, calibrated here with every query upright)
    for key in ("scorer", "cosine", "calibrated_on"):
        ver.pop(key, None)
    ver["query_rotations"] = [0.0]
    ver.update({
        "thresholds": thresholds,
        "band": decision_band(thresholds),
        "writer_normalisation": {
            "strength": norm.strength, "centre": norm.centre,
            "rule": "score = fused cosine - strength * (references' mean pairwise cosine - centre); "
                    "with one reference, the fused cosine",
            "method": "logistic regression on (fused cosine, agreement), genuine against skilled and random "
                      "impostors, 5 references, 3 draws; strength = -weight(agreement) / weight(cosine)",
            "command": command, **info,
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


def cross_fitted(sets: list[tuple[np.ndarray, list[str], list[str]]]) -> dict[tuple[str, str], WriterNormalisation]:
    """For each (collection, writer) of ``sets`` (in FIT_COLLECTIONS order), the normalisation
    fitted on the other half of the writers (halves: every other writer in sorted order)."""
    keys = sorted({(c, w) for c, (_, writers, _) in zip(FIT_COLLECTIONS, sets) for w in writers})
    half = {k: i % 2 for i, k in enumerate(keys)}
    out = {}
    for h in (0, 1):
        others = []
        for c, (emb, writers, kinds) in zip(FIT_COLLECTIONS, sets):
            rows = [i for i, w in enumerate(writers) if half[c, w] != h]
            others.append((emb[rows], [writers[i] for i in rows], [kinds[i] for i in rows]))
        norm, _ = fit_normalisation(others, strict=False)
        out.update({k: norm for k in keys if half[k] == h})
    return out


def _shown(path: Path) -> str:
    """A path as the manifest states it: relative to the repository where it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def bundle_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every scoring fit takes: the bundle, its splits, a dry run, the draws."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the packaged one)")
    ap.add_argument("--splits", type=Path, default=SPLITS, help="folder of the split CSVs (e.g. training/splits/fold1)")
    ap.add_argument("--dry-run", action="store_true", help="fit and report, but leave the manifest alone")
    ap.add_argument("--draws", type=int, default=10, help="reference draws the validation EERs are averaged over")
    return ap


def main(argv=None) -> int:
    ap = bundle_arguments(__doc__)
    ap.add_argument("--fit-bundle", type=Path, default=None,
                    help="bundle whose embedder embeds the writers the strength is fitted on (default: --bundle)")
    ap.add_argument("--fit-splits", type=Path, default=None, help="split folder of those writers (default: --splits)")
    ap.add_argument("--fit-part", choices=("train", "val"), default="train", help="which part of --fit-splits")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = " ".join(["python -m export.scoring", *(sys.argv[1:] if argv is None else argv)])
    try:
        ver = calibrate_bundle(args.bundle, args.splits, write=not args.dry_run, draws=args.draws,
                               fit_bundle=args.fit_bundle, fit_splits=args.fit_splits, fit_part=args.fit_part,
                               command=command)
    except SigedgeError as exc:  # a refused fit or bad input: one line, no traceback
        log.error("%s", exc)
        return 2 if isinstance(exc, UsageError) else 1
    print(json.dumps(ver["writer_normalisation"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
