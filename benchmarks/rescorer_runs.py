"""Compare rescorer training runs on the same candidates: each run, their mean, and each mirrored.

    TF_USE_LEGACY_KERAS=1 python benchmarks/rescorer_runs.py runs/rescorer-v1 runs/rescorer-v2 \
        --out benchmarks/results/rescorer-runs.json

Every run's QAT weights (``qat.h5``, what the int8 export converts) re-score the shipped int8
detector's candidates exactly as the runtime fuses them (``training.train_rescorer.fused_map``:
the 24-candidate cap, the geometric mean and the overlap rule), on two sets:

* ``validation``: the 48 page-disjoint validation pages of documents_tobacco800;
* ``generated``: ``--generated`` docsynth pages from seeds no training run used (page seed
  5000, signature-pool seed 9), a second held-out set that costs no real page.

Two combinations are scored too, each with no parameter to fit: ``mean`` (the runs' logits
averaged, with two or more runs) and ``RUN+mirror`` (the logit of the crop and of its mirror
image averaged). Needs the training extras (TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tensorflow as tf  # noqa: E402

from benchmarks.heldout_pages import page_sets, write_report  # noqa: E402
from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import Detector  # noqa: E402
from training.train_rescorer import fused_map, load_qat_rescorer, parse_args  # noqa: E402


class MeanLogit:
    """The mean logit of several rescorers (a model-shaped callable)."""

    def __init__(self, *models):
        self.models = models

    def __call__(self, x, training=False):
        return tf.reduce_mean(tf.stack([m(x, training=training) for m in self.models]), 0)


class MirrorLogit:
    """A rescorer's mean logit over the crop and its left-right mirror image."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, training=False):
        return 0.5 * (self.model(x, training=training) + self.model(x[:, :, ::-1], training=training))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="train_rescorer output folders (with qat.h5)")
    ap.add_argument("--generated", type=int, default=300, help="generated held-out pages (0: none)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    targs = parse_args(["--out", str(args.runs[0])])  # the training defaults: data, cache, page style, pool size
    sets = page_sets(targs, args.generated)
    detector = Detector(ModelBundle.load().model("detector"))
    models = {str(r): load_qat_rescorer(r) for r in args.runs}
    if len(args.runs) > 1:
        models["mean"] = MeanLogit(*models.values())
    models.update({f"{r}+mirror": MirrorLogit(models[str(r)]) for r in args.runs})
    report = {name: {s: fused_map(m, detector, pages) for s, pages in sets.items()} for name, m in models.items()}
    write_report({"pages": {s: len(p) for s, p in sets.items()}, "results": report}, args.out)
    for name, r in report.items():
        print(f"{name:40s} " + "  ".join(f"{s} mAP@0.5 {v['map50']:.3f} ({v['map50_95']:.3f})" for s, v in r.items()),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
