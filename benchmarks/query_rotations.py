"""What the query-rotation search costs upright signatures, fold by fold.

    python benchmarks/query_rotations.py --fold 0=sigedge/models/default \\
        --fold 1=runs/embedder-fold1/bundle --fold 2=runs/embedder-fold2/bundle \\
        --fold 3=runs/embedder-fold3/bundle --out benchmarks/results/query-rotations.json

Verification scores a query also turned by the bundle's query rotations (-10 and 10 degrees)
and keeps its best score. That rescues signatures written or scanned at a slant
(``benchmarks/robustness.py``), but every impostor gets the same extra chances. This
measures the price on the upright validation signatures of each fold's sigcomp2011_dutch
writers (``training/splits/foldK``; fold 0 is ``training/splits``), with the fold's own
bundle and learned scorer: skilled and random EER, and FRR at skilled FAR 1 %, 5 % and 10 %
and at random FAR 1 %, each the mean over ``--draws`` seeded reference draws (5 references),
the search against the upright query on the same draws. FAR 1 % of about 130 skilled
attempts is one or two forgeries: that column is the noisiest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import split_dir  # noqa: E402
from export.fit_scorer import describe_queries  # noqa: E402
from export.scoring import read_split  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.evaluate import protocol_scores  # noqa: E402
from sigedge.metrics import equal_error_rate, frr_at_far  # noqa: E402

SEARCH = (-10.0, 0.0, 10.0)
COLUMNS = ("eer_skilled", "eer_random", "frr_at_far1_skilled", "frr_at_far5_skilled", "frr_at_far10_skilled",
           "frr_at_far1_random")


def rates(genuine: np.ndarray, skilled: np.ndarray, random: np.ndarray) -> list[float]:
    return [equal_error_rate(genuine, skilled)[0], equal_error_rate(genuine, random)[0],
            frr_at_far(genuine, skilled, 0.01), frr_at_far(genuine, skilled, 0.05),
            frr_at_far(genuine, skilled, 0.10), frr_at_far(genuine, random, 0.01)]


def evaluate_fold(fold: int, bundle: Path, draws: int) -> dict:
    # the search's angles whatever the bundle states; the scorer's ranking does not depend on
    # its calibration, so the EERs and FRRs hold for a bundle calibrated either way (no
    # decision is made here: the threshold only keeps the pipeline from warning about it)
    pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
    if pipe.scorer is None:
        raise SystemExit(f"{bundle}: no learned scorer in its manifest (python -m export.fit_scorer --bundle ...)")
    (emb, ink, writers, kinds), variants = describe_queries(pipe, read_split(split_dir(fold) / "sigcomp2011_dutch_val.csv"))
    out = {"fold": fold, "bundle": str(bundle), "model_sha256": pipe.model_sha256, "draws": draws}
    for name, v in (("search", variants), ("upright", None)):
        rows = []
        for seed in range(draws):
            ps = protocol_scores(emb, writers, kinds, 5, seed=seed, scorer=pipe.scorer, ink=ink, query_variants=v)
            rows.append(rates(ps.genuine, ps.skilled, ps.random))
        out[name] = dict(zip(COLUMNS, np.mean(rows, axis=0).tolist()))
    return out


def fold_arguments(doc: str | None, argv=None, more: Callable[[argparse.ArgumentParser], None] | None = None
                   ) -> tuple[argparse.Namespace, list[tuple[int, Path]]]:
    """``--fold K=BUNDLE`` (repeatable), ``--draws`` and ``--out`` (and what ``more`` adds to the
    parser), parsed; the folds as (K, bundle)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if more is not None:
        more(ap)
    ap.add_argument("--fold", action="append", required=True, metavar="K=BUNDLE",
                    help="a fold and its bundle, e.g. 1=runs/embedder-fold1/bundle (repeatable)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    folds = []
    for text in args.fold:
        k, _, path = text.partition("=")
        if not k.isdigit() or not path:
            ap.error(f"--fold K=BUNDLE, not {text!r}")
        folds.append((int(k), Path(path)))
    return args, folds


def evaluate_folds(doc: str | None, argv, evaluate, show) -> tuple[argparse.Namespace, list[dict]]:
    """Parse :func:`fold_arguments`, then ``evaluate(K, bundle, draws)`` each fold in turn,
    ``show(K, result)`` as each is done; the arguments and the results."""
    args, specs = fold_arguments(doc, argv)
    folds = []
    for k, bundle in specs:
        folds.append(evaluate(k, bundle, args.draws))
        show(k, folds[-1])
    return args, folds


def main(argv=None) -> int:
    args, folds = evaluate_folds(__doc__, argv, evaluate_fold, lambda k, f: print(f"fold {k}  " + "  ".join(
        f"{c}: {100 * f['search'][c]:.1f} vs {100 * f['upright'][c]:.1f}" for c in COLUMNS), flush=True))
    mean = {name: {c: float(np.mean([f[name][c] for f in folds])) for c in COLUMNS} for name in ("search", "upright")}
    report = {"search_angles": list(SEARCH), "references": 5, "folds": folds, "mean": mean,
              "mean_over_folds": [f["fold"] for f in folds]}
    print("mean    " + "  ".join(f"{c}: {100 * mean['search'][c]:.2f} vs {100 * mean['upright'][c]:.2f}"
                                  for c in COLUMNS))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
