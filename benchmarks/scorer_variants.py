"""Which learned scorer to ship: feature sets and fit writers, on the same validation trials.

    python benchmarks/scorer_variants.py --out benchmarks/results/scorer-variants.json
    python benchmarks/scorer_variants.py --bundle runs/embedder-fold1/bundle --splits training/splits/fold1

Every variant is fitted as ``python -m export.fit_scorer`` fits the shipped one (training
writers of the bundle's splits, 5 references, 3 draws, ridge 1, each collection weighing
alike) and scored on the validation writers with the protocol of ``sigedge evaluate`` over
10 reference draws (the mean EER is reported; seeds 0-9). The Platt rescaling of the shipped
scorer moves no ranking, so it is left out here. Variants:

* which ink statistics (``sigedge.scoring.INK_STATISTICS``) the scorer weighs: none, the two
  geometric ones (aspect ratio, connected regions: shipped), all four (with ink fraction and
  stroke width), ...;
* which trial features: without the "minus the references" part, or without its cosine term
  (the per-writer normalisation of the cosine);
* which writers it is fitted on: SigComp and SSBI (shipped), or the cross-media training
  writers too;
* the ridge penalty: 1 (shipped) or a token 0.001.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.fit_scorer import STATISTICS, collection_weights, describe_rows, scorer_trials  # noqa: E402
from export.scoring import EVAL_REFERENCES, FIT_COLLECTIONS, SPLITS, fit_logistic, read_split  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.evaluate_cli import over_draws  # noqa: E402
from sigedge.scoring import INK_STATISTICS, LearnedScorer  # noqa: E402

log = logging.getLogger("scorer_variants")
ALL_COLLECTIONS = tuple(EVAL_REFERENCES)
#: name: (ink statistics, trial-feature mask over (query part, "minus the references" part), fit collections, ridge)
VARIANTS = {
    "cosine and its normalisation only": ((), None, FIT_COLLECTIONS, 1.0),
    "shipped: cosine + aspect + regions": (STATISTICS, None, FIT_COLLECTIONS, 1.0),
    "all four statistics": (INK_STATISTICS, None, FIT_COLLECTIONS, 1.0),
    "cosine + aspect": (("log_aspect",), None, FIT_COLLECTIONS, 1.0),
    "cosine + ink fraction + stroke width": (("log_ink_fraction", "log_stroke_width"), None, FIT_COLLECTIONS, 1.0),
    "shipped, without the references part": (STATISTICS, "query", FIT_COLLECTIONS, 1.0),
    "shipped, without the cosine's references part": (STATISTICS, "no-cosine-ref", FIT_COLLECTIONS, 1.0),
    "shipped, ridge 0.001": (STATISTICS, None, FIT_COLLECTIONS, 1e-3),
    "shipped, fitted on cross-media too": (STATISTICS, None, ALL_COLLECTIONS, 1.0),
    "all four, fitted on cross-media too": (INK_STATISTICS, None, ALL_COLLECTIONS, 1.0),
}


def mask_for(kind: str | None, n: int) -> np.ndarray:
    """Which of the 2n trial features a variant keeps."""
    keep = np.ones(2 * n, bool)
    if kind == "query":
        keep[n:] = False
    elif kind == "no-cosine-ref":
        keep[n] = False
    return keep


def fit_variant(described: dict, statistics: tuple[str, ...], kind: str | None, collections: tuple[str, ...],
                ridge: float) -> LearnedScorer:
    parts = [[scorer_trials(*described[c, "train"], EVAL_REFERENCES[c], 1000 + d, statistics) for d in range(3)]
             for c in collections]
    x = np.vstack([p[0] for per in parts for p in per])
    kinds = np.concatenate([p[1] for per in parts for p in per])
    weight = collection_weights([np.concatenate([p[1] for p in per]) for per in parts])
    n = 1 + len(statistics)
    keep = mask_for(kind, n)
    coef, intercept = fit_logistic(x[:, keep], (kinds == "genuine").astype(float), weight, l2=ridge)
    full = np.zeros(2 * n)
    full[keep] = coef
    own = (x[:, :n] - x[:, n:]).mean(axis=0)
    return LearnedScorer(coef=tuple(map(float, full)), intercept=float(intercept), own_default=tuple(map(float, own)),
                         statistics=statistics)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the packaged one)")
    ap.add_argument("--splits", type=Path, default=SPLITS, help="folder of the split CSVs")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pipe = Pipeline(args.bundle, PipelineOptions(precision="int8", scorer="cosine"))
    described = {(c, part): describe_rows(pipe, read_split(args.splits / f"{c}_{part}.csv"))
                 for c in ALL_COLLECTIONS for part in ("train", "val")}
    report = {"command": "python benchmarks/scorer_variants.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model_sha256": pipe.model_sha256, "draws": args.draws, "variants": {}}

    def evaluate(scorer: LearnedScorer | None) -> dict:
        out = {}
        for c, refs in EVAL_REFERENCES.items():
            emb, ink, writers, kinds = described[c, "val"]
            d = over_draws(emb, writers, kinds, refs, 0, args.draws, "mean", scorer=scorer, ink=ink)
            out[c] = {"eer_skilled": d["eer_skilled_mean"], "eer_random": d["eer_random_mean"]}
        return out

    rows = {"mean cosine (no scorer)": evaluate(None)}
    for name, (statistics, kind, collections, ridge) in VARIANTS.items():
        scorer = fit_variant(described, statistics, kind, collections, ridge)
        rows[name] = {**evaluate(scorer), "coef": list(scorer.coef), "statistics": list(statistics),
                      "fit_collections": list(collections), "ridge": ridge}
    report["variants"] = rows
    pct = lambda v: "   -  " if v is None else f"{100 * v:5.1f}"  # noqa: E731
    print(f"{'variant':48s} " + "  ".join(f"{c[:8]:>8s} sk / rnd" for c in EVAL_REFERENCES))
    for name, r in rows.items():
        print(f"{name:48s} " + "  ".join(f"{pct(r[c]['eer_skilled'])} / {pct(r[c]['eer_random'])}"
                                         for c in EVAL_REFERENCES))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
