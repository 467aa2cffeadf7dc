"""How sure is a cross-validated EER? A bootstrap over the writers of every fold.

    python benchmarks/fold_bootstrap.py --fold 0=sigedge/models/default --fold 1=runs/hinge/fold1 \
        --fold 2=runs/hinge/fold2 --fold 3=runs/hinge/fold3 --against-cosine \
        --out benchmarks/results/fold-bootstrap-hinge.json

Each fold's validation writers are scored with the bundle trained without them, exactly as
``sigedge evaluate FOLD/sigcomp2011_dutch_val.csv --bundle BUNDLE --refs 5`` scores them (the
bundle's scorer, each query at the bundle's query rotations, reference draw ``--seed``). Then
the writers of each fold are resampled with replacement, within the fold, ``--resamples``
times; each resample's folds give their EERs and the mean of them. The report gives each
fold's EER with its interval and the mean's interval (95 % by default): how far the number
that cross-validation reports could move with other writers like these. With about eleven
writers a fold, one writer moves a fold's skilled EER by points.

``--against-cosine`` also scores the same trials by the mean cosine alone (``sigedge evaluate
--scorer cosine``) and resamples both with the same writers each time (a paired bootstrap):
the interval of the difference says whether the bundle's scorer is better beyond that noise.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import parse_fold, split_dir  # noqa: E402

from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.evaluate import bootstrap_difference, bootstrap_over_writers, protocol_scores, report_from_scores  # noqa: E402
from sigedge.evaluate_cli import score_protocol  # noqa: E402

log = logging.getLogger("fold_bootstrap")


def fold_scores(fold: int, bundle: Path, labels_name: str, refs: int, seed: int):
    """(the protocol's scores of one fold's validation writers under the fold's bundle, the same
    trials scored by the mean cosine alone, as ``--scorer cosine`` scores them, the bundle's
    int8 embedder sha256)."""
    pipe = Pipeline(bundle, PipelineOptions())
    measured = score_protocol(split_dir(fold) / labels_name, pipe, refs=refs, seed=seed)
    cosine = protocol_scores(measured.vectors, measured.writers, measured.kinds, references=refs, seed=seed,
                             fusion=measured.fusion, **{**measured.scoring, "scorer": None})
    return measured.scores, cosine, pipe.model_sha256


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=parse_fold, action="append", required=True, metavar="K=BUNDLE",
                    help="a fold and the bundle trained without its writers (repeat per fold)")
    ap.add_argument("--labels", default="sigcomp2011_dutch_val.csv",
                    help="the validation CSV in each fold's split folder (default: %(default)s)")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="reference draw and resampling seed")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--against-cosine", action="store_true",
                    help="also score by the mean cosine and give the paired difference's interval")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folds = sorted(dict(args.fold).items())
    scores, cosine, per_fold = [], [], []
    for k, bundle in folds:
        ps, ps_cosine, sha256 = fold_scores(k, bundle, args.labels, args.refs, args.seed)
        cosine.append(ps_cosine)
        rep = report_from_scores(ps, args.refs)
        alone = bootstrap_over_writers(ps, args.resamples, args.seed, args.level)
        per_fold.append({"fold": k, "bundle": str(bundle), "model_sha256": sha256, "writers": ps.writers, "eer_skilled": rep.eer_skilled,
                         "eer_random": rep.eer_random, "eer_skilled_interval": alone["eer_skilled_interval"],
                         "eer_random_interval": alone["eer_random_interval"]})
        scores.append(ps)
        log.info("fold %d: skilled %.2f %%, random %.2f %%", k, 100 * rep.eer_skilled, 100 * rep.eer_random)
    joint = bootstrap_over_writers(scores, args.resamples, args.seed, args.level)
    mean = {"eer_skilled": float(np.mean([f["eer_skilled"] for f in per_fold])),
            "eer_random": float(np.mean([f["eer_random"] for f in per_fold])),
            "eer_skilled_interval": joint["eer_skilled_interval"],
            "eer_random_interval": joint["eer_random_interval"],
            "eer_skilled_skipped": joint["eer_skilled_skipped"], "eer_random_skipped": joint["eer_random_skipped"]}
    comparison = None
    if args.against_cosine:
        comparison = {"baseline": "mean cosine (--scorer cosine)",
                      "baseline_eer_skilled": [report_from_scores(ps, args.refs).eer_skilled for ps in cosine],
                      "baseline_eer_random": [report_from_scores(ps, args.refs).eer_random for ps in cosine],
                      **bootstrap_difference(scores, cosine, args.resamples, args.seed, args.level)}
        for name in ("skilled", "random"):
            comparison[f"baseline_mean_eer_{name}"] = float(np.mean(comparison[f"baseline_eer_{name}"]))
    result = {"labels": args.labels, "references": args.refs, "seed": args.seed, "resamples": args.resamples,
              "level": args.level, "unit": "writer, within each fold", "folds": per_fold, "mean": mean}
    if comparison is not None:
        result["against_cosine"] = comparison
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    pct = lambda v: f"{100 * v:6.2f} %"  # noqa: E731
    for row in per_fold + [dict(mean, fold="mean")]:
        s, r = row["eer_skilled_interval"], row["eer_random_interval"]
        print(f"{row['fold']!s:>4}  skilled {pct(row['eer_skilled'])} [{pct(s[0])}, {pct(s[1])}]  "
              f"random {pct(row['eer_random'])} [{pct(r[0])}, {pct(r[1])}]")
    if comparison is not None:
        for name in ("skilled", "random"):
            lo, hi = comparison[f"difference_{name}_interval"]
            print(f"{name}: bundle's scorer minus mean cosine {pct(mean[f'eer_{name}'] - comparison[f'baseline_mean_eer_{name}'])}"
                  f" [{pct(lo)}, {pct(hi)}], better in {100 * comparison[f'share_better_{name}']:.1f} % of resamples")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SigedgeError as exc:  # a missing bundle, folder or split: one line, sigedge's exit code
        print(f"fold_bootstrap: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
