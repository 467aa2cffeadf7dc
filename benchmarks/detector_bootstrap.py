"""Is the detector's second stage worth it beyond the noise of a few dozen pages?

    python benchmarks/detector_bootstrap.py ../shared/data/documents_tobacco800 \
        --split training/splits/tobacco800_val.txt --out benchmarks/results/detector-bootstrap.json

Runs the bundle's detector on every labelled page twice, as ``sigedge evaluate-detector``
does: with its rescorers (what ``Pipeline.detect`` runs, at the rescored threshold) and
without them (``DetectOptions(rescore=False)``, at the detector's own threshold). Then the
pages are resampled with replacement, the same pages for both each time (a paired
bootstrap), and the report gives each configuration's figures with their intervals and the
interval of the differences (with rescoring minus without). mAP ranks every box down to a
score of 0.01, so it does not depend on either threshold; precision and recall are at each
configuration's own threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.detect import DetectOptions, ranked_boxes  # noqa: E402
from sigedge.detection_metrics import (bootstrap_over_pages, evaluate_detections, read_split,  # noqa: E402
                                       read_yolo_labels, yolo_pairs)
from sigedge.imageio import load_image  # noqa: E402

log = logging.getLogger("detector_bootstrap")


def predictions(pipe: Pipeline, pages: list[tuple[str, np.ndarray]]) -> tuple[dict, float]:
    """Every page's boxes as mAP ranks them, and the configuration's own threshold."""
    return {name: ranked_boxes(pipe.detector, img) for name, img in pages}, pipe.detector.score_threshold


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="YOLO folder (images/, labels/)")
    ap.add_argument("--split", type=Path, default=None, help="only the image file names listed here")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pairs = yolo_pairs(args.folder)
    if args.split is not None:
        wanted = read_split(args.split)
        pairs = [p for p in pairs if p[0].name in wanted]
    pages, truth = [], {}
    for img_path, label_path in pairs:
        img = load_image(img_path)
        h, w = img.shape[:2]
        truth[img_path.name] = read_yolo_labels(label_path, w, h) if label_path is not None else np.zeros((0, 4))
        pages.append((img_path.name, img))
    rescored = Pipeline(args.bundle, PipelineOptions())
    if not rescored.detector.rescores:
        log.error("the bundle's detector has no rescorer: nothing to compare")
        return 1
    alone = Pipeline(args.bundle, PipelineOptions(detect_options=DetectOptions(rescore=False)))
    with_second, thr = predictions(rescored, pages)
    without, thr_alone = predictions(alone, pages)
    result = {"folder": str(args.folder), "split": str(args.split) if args.split else None, "pages": len(pages),
              "ground_truth": int(sum(len(t) for t in truth.values())),
              "with_rescorers": evaluate_detections(with_second, truth, thr).to_dict(),
              "detector_alone": evaluate_detections(without, truth, thr_alone).to_dict(),
              "bootstrap": bootstrap_over_pages(with_second, truth, thr, args.resamples, args.seed,
                                                baseline=(without, thr_alone)),
              "bootstrap_detector_alone": bootstrap_over_pages(without, truth, thr_alone, args.resamples,
                                                               args.seed)}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    b = result["bootstrap"]
    for name in ("map50", "map50_95"):
        lo, hi = b[f"difference_{name}_interval"]
        print(f"{name}: with rescorers {result['with_rescorers'][name]:.3f}, alone {result['detector_alone'][name]:.3f}; "
              f"difference 95 % interval {lo:+.3f} to {hi:+.3f}, better in {100 * b[f'share_better_{name}']:.1f} % "
              "of resamples")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SigedgeError as exc:  # a missing bundle, folder or split: one line, sigedge's exit code
        print(f"detector_bootstrap: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
