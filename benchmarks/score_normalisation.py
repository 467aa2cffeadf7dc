"""Per-writer score normalisation from the spread of the writer's own references: does it help?

    python benchmarks/score_normalisation.py training/splits/sigcomp2011_dutch_val.csv training/splits/ssbi_val.csv

Same protocol as ``sigedge evaluate`` (5 seeded references per writer, mean fusion). For
each writer, every reference's mean similarity to the other references (leave-one-out)
gives the writer's own "genuine" level ``mu`` and spread ``sd``. Compared:

* ``none``: the fused score as shipped;
* ``shift``: score - mu (a consistent writer must be matched more closely);
* ``z``: (score - mu) / max(sd, 0.02).

Prints skilled and random EER for each. Measured 2026-11-28 with the shipped int8 model:
SigComp val none 19.12 / 4.72 %, shift 18.38 / 3.61 %, z 23.60 / 6.04 %; SSBI val none
17.46 / 3.17 %, shift 18.75 / 4.83 %, z 19.05 / 11.11 %. Not consistent across the two
collections, so the runtime does not normalise. (``export/scoring.py`` now fits a
normalisation's strength by logistic regression, with a bootstrap interval and a
cross-fitted measurement; it is still not shipped, see the model card. This script's
``shift`` is strength 1 with the writer's own mean as centre.)
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from sigedge import Pipeline
from sigedge.metrics import equal_error_rate


def writer_scores(emb, writers, kinds, refs: int, seed: int) -> dict[str, tuple[list, list, list]]:
    rng = np.random.default_rng(seed)
    gen = {w: np.flatnonzero((writers == w) & (kinds == "genuine")) for w in sorted(set(writers))}
    eligible = [w for w, i in gen.items() if len(i) > refs]
    out: dict[str, tuple[list, list, list]] = {m: ([], [], []) for m in ("none", "shift", "z")}
    for w in eligible:
        ref_rows = rng.choice(gen[w], refs, replace=False)
        r = emb[ref_rows]
        rr = r @ r.T
        loo = (rr.sum(axis=1) - 1.0) / (refs - 1)
        mu, sd = float(loo.mean()), max(float(loo.std()), 0.02)
        queries = (np.setdiff1d(gen[w], ref_rows), np.flatnonzero((writers == w) & (kinds == "forgery")),
                   np.concatenate([gen[o] for o in eligible if o != w]))
        for k, idx in enumerate(queries):
            s = (emb[idx] @ r.T).mean(axis=1)
            out["none"][k].extend(s)
            out["shift"][k].extend(s - mu)
            out["z"][k].extend((s - mu) / sd)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", type=Path, nargs="+")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pipe = Pipeline()
    for csv_path in args.labels:
        rows = list(csv.DictReader(open(csv_path, newline="", encoding="utf-8")))
        emb = np.stack([pipe.embed(csv_path.parent / r["path"]) for r in rows])
        scores = writer_scores(emb, np.array([r["writer"] for r in rows]), np.array([r["kind"] for r in rows]),
                               args.refs, args.seed)
        for method, (g, s, r) in scores.items():
            eer_s = equal_error_rate(np.array(g), np.array(s))[0] if s else float("nan")
            eer_r = equal_error_rate(np.array(g), np.array(r))[0]
            print(f"{csv_path.stem:24s} {method:6s} skilled EER {100 * eer_s:6.2f} %  random EER {100 * eer_r:6.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
