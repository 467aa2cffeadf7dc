"""A rescorer cascade, simulated on the shipped int8 files: ask the first rescorer, and the
others only where it is unsure.

    TF_USE_LEGACY_KERAS=1 python benchmarks/rescorer_cascade.py --confident-logit 4.595 2.944 \
        --out benchmarks/results/rescorer-cascade.json

Each candidate's crop goes to the bundle's first rescorer. Where the magnitude of its logit
reaches ``--confident-logit`` (4.595 is a probability of 0.99 or 0.01), that logit is the
second stage's answer; elsewhere the mean logit of all the rescorers is, as the shipped
runtime computes for every candidate. The runtime's ``Detector.detect`` does the rest
(fusion, overlap rule, thresholds). Reports mAP@0.5 (0.5:0.95), P / R at the shipped
threshold and rescorer calls a candidate, on the validation pages of documents_tobacco800
and on the held-out generated pages of ``benchmarks/rescorer_runs.py``; ``full`` is the
shipped ensemble. Needs the training extras (TensorFlow) for the generated pages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.heldout_pages import page_sets, write_report  # noqa: E402
from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import Detector, _sigmoid, rescorer_roles  # noqa: E402
from sigedge.detection_metrics import evaluate_detections  # noqa: E402
from training.train_rescorer import parse_args  # noqa: E402


class Cascade:
    """``Detector.rescorer_probabilities`` with an early answer from the first rescorer.

    Every rescorer runs (``Detector.rescorer_logits``); the calls a real cascade would make
    are counted, not timed."""

    def __init__(self, det: Detector, confident_logit: float | None):
        self.det, self.confident_logit = det, confident_logit
        self.candidates = self.calls = 0

    def __call__(self, canvas: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        logits = self.det.rescorer_logits(canvas, boxes)
        unsure = (np.ones(len(boxes), bool) if self.confident_logit is None
                  else np.abs(logits[0]) < self.confident_logit)
        answer = np.where(unsure, logits.mean(axis=0), logits[0])
        self.candidates += len(boxes)
        self.calls += len(boxes) + int(unsure.sum()) * (len(logits) - 1)
        return _sigmoid(answer).astype(np.float32)


def score(det: Detector, cascade: Cascade, pages) -> dict:
    cascade.candidates = cascade.calls = 0
    preds, truth = {}, {}
    for k, (gray, gt) in enumerate(pages):
        found = det.detect(gray, score_threshold=0.01)  # mAP ranks every box down to 0.01
        preds[str(k)] = (np.array([d.box for d in found]).reshape(-1, 4), np.array([d.score for d in found]))
        truth[str(k)] = gt
    r = evaluate_detections(preds, truth, score_threshold=det.score_threshold)
    return {"map50": r.map50, "map50_95": r.map50_95, "precision": r.precision, "recall": r.recall,
            "rescorer_calls_per_candidate": cascade.calls / max(1, cascade.candidates)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--confident-logit", type=float, nargs="+", default=[4.595])
    ap.add_argument("--generated", type=int, default=300, help="generated held-out pages (0: none)")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.bundle)
    spec = bundle.model("detector")
    det = Detector(spec, threads=1, rescorers=[bundle.model(r) for r in rescorer_roles(spec.raw)])
    sets = page_sets(parse_args(["--out", "unused"]), args.generated)  # the training defaults: data, pool, style
    report = {"pages": {s: len(p) for s, p in sets.items()}, "threshold": det.score_threshold, "results": {}}
    for logit in [None, *args.confident_logit]:
        det.rescorer_probabilities = cascade = Cascade(det, logit)
        name = "full" if logit is None else f"confident_logit_{logit}"
        report["results"][name] = {s: score(det, cascade, pages) for s, pages in sets.items()}
        print(name, json.dumps(report["results"][name]), file=sys.stderr, flush=True)
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
