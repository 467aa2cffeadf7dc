"""Fit the learned scorer on writers its embedder never saw (cross-fitted), with and without the contour hinge.

    python benchmarks/crossfit_scorer.py --fold 0=sigedge/models/default --fold 1=runs/embedder-fold1/bundle \\
        --fold 2=runs/embedder-fold2/bundle --fold 3=runs/embedder-fold3/bundle \\
        --out benchmarks/results/crossfit-scorer.json

``python -m export.fit_scorer`` fits the shipped scorer on the embedder's own training
writers. The embedder has learned those writers (skilled EER 0.00 % on three folds of four,
model card, "Where the gap … comes from"), so in that fit the cosine separates genuine
signatures from forgeries almost alone, and the regression learns to trust it far more than
it deserves on a new writer, and the other features (which know nothing of the embedder's
training) less. Every writer of sigcomp2011_dutch and of four fifths of ssbi is a validation
writer of one of the four folds, embedded there by an embedder that never saw it. Fitting
fold K's scorer on the validation writers of the *other* folds, each embedded by its own
fold's bundle (and projected on that bundle's background), gives the regression the
statistics of new writers, while fold K's validation writers stay out of every fit: the
protocol is nested, as stacking is.

For each fold: four scorers over the same trials of the fold's validation writers
(SigComp and SSBI, 5 references, ``--draws`` draws, each query at -10, 0 and 10 degrees
keeping its best log-odds, and upright only; and the cross-media set's random EER, 2
references, at most 40 other identities' signatures an identity, tablet and paper mixed,
which no fit sees, as in the shipped fit):

* ``training writers``: the shipped features fitted as ``export.fit_scorer`` fits them;
* ``training writers + hinge``: with the contour-hinge distances added
  (``sigedge.hinge`` traced on the ink's own outline, ``stroke="ink"``, as
  ``benchmarks/shape_features.py --extra hinge`` adds them; the shipped scorer traces the
  skeleton instead, and ``python -m export.fit_scorer --cross-fit …`` measures it);
* ``cross-fitted`` and ``cross-fitted + hinge``: the same features fitted on the other folds'
  validation writers.

All fits use the shipped fit's settings (3 draws, at most 40 random impostors a writer, ridge
1, collection weights). Needs all four folds' bundles, each with a scorer with a background.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import split_dir  # noqa: E402
from query_rotations import fold_arguments  # noqa: E402
from shape_features import COLLECTIONS, SEARCH, Described, trial_features  # noqa: E402

from export.fit_scorer import RIDGE, collection_weights  # noqa: E402
from export.scoring import EVAL_REFERENCES, fit_logistic, read_split  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.metrics import equal_error_rate  # noqa: E402

UP = SEARCH.index(0.0)
FIT_DRAWS = 3
CROSS_MEDIA = "cross_media_chinese"
#: Random impostors an identity of the cross-media set is tried against, a draw.
CROSS_MEDIA_RANDOM = 40
METHODS = ("training writers", "training writers + hinge", "cross-fitted", "cross-fitted + hinge")


def fit(parts: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray, float]:
    """A logistic regression over trials grouped by collection, weighed as the shipped fit weighs them."""
    x = np.vstack([f for per in parts.values() for f, _ in per])
    kind = np.concatenate([k for per in parts.values() for _, k in per])
    weight = collection_weights([np.concatenate([k for _, k in per]) for per in parts.values()])
    return fit_logistic(x, (kind == "genuine").astype(float), weight, l2=RIDGE)


def fit_trials(pipe: Pipeline, described: dict[str, Described], angle: int, hinge: bool) -> dict[str, list]:
    return {c: [trial_features(pipe, d, angle, 1000 + s, angle, 40, hinge) for s in range(FIT_DRAWS)]
            for c, d in described.items()}


def validation_eers(pipe: Pipeline, val: dict[str, Described], model: tuple[np.ndarray, float], hinge: bool,
                    draws: int) -> dict:
    coef, intercept = model
    out = {}
    for coll, d in val.items():
        runs = {"search": [], "upright": []}
        max_random = CROSS_MEDIA_RANDOM if coll == CROSS_MEDIA else 10 ** 6
        for seed in range(draws):
            per_angle = [trial_features(pipe, d, UP, seed, a, max_random, hinge, EVAL_REFERENCES[coll])
                         for a in range(len(SEARCH))]
            z = np.stack([f @ coef + intercept for f, _ in per_angle])
            k = per_angle[0][1]
            for rule, score in (("search", z.max(axis=0)), ("upright", z[UP])):
                skilled = equal_error_rate(score[k == "genuine"], score[k == "skilled"])[0] if (k == "skilled").any() \
                    else float("nan")
                runs[rule].append([skilled, equal_error_rate(score[k == "genuine"], score[k == "random"])[0]])
        out[coll] = {rule: {name: _number(x) for name, x in zip(("eer_skilled", "eer_random"), np.mean(v, axis=0))}
                     for rule, v in runs.items()}
    return out


def _number(x: float) -> float | None:
    """A rate, or None where the collection has no such trials (skilled forgeries of the cross-media set)."""
    return None if np.isnan(x) else float(x)


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def main(argv=None) -> int:
    args, specs = fold_arguments(__doc__, argv)
    if len(specs) < 2:
        raise SystemExit("cross-fitting needs at least two folds (--fold K=BUNDLE, repeated)")
    pipes, val, train = {}, {}, {}
    for k, bundle in specs:
        pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
        if pipe.scorer is None or pipe.scorer.background is None:
            raise SystemExit(f"{bundle}: needs a scorer with a background (python -m export.fit_scorer --background)")
        split = split_dir(k)
        pipes[k] = pipe
        val[k] = {c: Described(pipe, read_split(split / f"{c}_val.csv"), SEARCH, "hinge") for c in (*COLLECTIONS, CROSS_MEDIA)}
        train[k] = {c: Described(pipe, read_split(split / f"{c}_train.csv"), (0.0,), "hinge") for c in COLLECTIONS}
        print(f"fold {k}: described", flush=True)
    folds = []
    for k, bundle in specs:
        result: dict = {"fold": k, "bundle": str(bundle), "draws": args.draws}
        for method in METHODS:
            hinge = method.endswith("hinge")
            if method.startswith("training"):
                parts = fit_trials(pipes[k], train[k], 0, hinge)
            else:
                parts = {c: [t for j in pipes if j != k for t in fit_trials(pipes[j], {c: val[j][c]}, UP, hinge)[c]]
                         for c in COLLECTIONS}
            model = fit(parts)
            result[method] = validation_eers(pipes[k], val[k], model, hinge, args.draws)
            result[method]["fit_trials"] = int(sum(len(f) for per in parts.values() for f, _ in per))
            print(f"fold {k} {method:25s} " + "  ".join(
                f"{c[:8]} {rule} {_percent(v['eer_skilled'])}/{_percent(v['eer_random'])}"
                for c in (*COLLECTIONS, CROSS_MEDIA) for rule, v in result[method][c].items()), flush=True)
        folds.append(result)
    mean = {m: {c: {rule: {e: _number(np.mean([np.nan if f[m][c][rule][e] is None else f[m][c][rule][e] for f in folds]))
                           for e in ("eer_skilled", "eer_random")}
                    for rule in ("search", "upright")} for c in (*COLLECTIONS, CROSS_MEDIA)} for m in METHODS}
    for m, per in mean.items():
        print(f"mean   {m:25s} " + "  ".join(f"{c[:8]} {rule} {_percent(v['eer_skilled'])}/{_percent(v['eer_random'])}"
                                            for c, r in per.items() for rule, v in r.items()))
    if args.out:
        args.out.write_text(json.dumps({"folds": folds, "mean": mean, "search_angles": list(SEARCH),
                                        "fit_draws": FIT_DRAWS}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
