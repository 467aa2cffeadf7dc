"""mAP of every detector x rescorer pairing in a bundle (int8/float each), on a labelled folder.

    python benchmarks/detector_pairs.py ../shared/data/documents_tobacco800 \
        --split training/splits/tobacco800_val.txt

The shipped pairs are int8 + int8 and float + float; the mixed pairs tell whether a gap
between those two comes from quantising the detector or the rescorer. mAP ranks every box
down to a score of 0.01, so no threshold is involved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import Detector, rescorer_roles  # noqa: E402
from sigedge.detection_metrics import evaluate_detections, read_split, read_yolo_labels, yolo_pairs  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="YOLO folder (images/, labels/)")
    p.add_argument("--split", type=Path, default=None, help="only the image file names listed here")
    p.add_argument("--bundle", type=Path, default=None)
    args = p.parse_args(argv)
    pairs = yolo_pairs(args.folder)
    if args.split is not None:
        wanted = read_split(args.split)
        pairs = [pr for pr in pairs if pr[0].name in wanted]
    pages, truth = [], {}
    for k, (img_path, label_path) in enumerate(pairs):
        img = load_image(img_path)
        pages.append(img)
        h, w = img.shape[:2]
        truth[str(k)] = read_yolo_labels(label_path, w, h) if label_path is not None else np.zeros((0, 4))
    bundle = ModelBundle.load(args.bundle)
    report = {}
    for det_role in ("detector", "detector_float"):
        for res_owner in ("detector", "detector_float"):  # the int8 rescorers, then the float ones
            if det_role not in bundle.models or res_owner not in bundle.models:
                continue
            res_roles = rescorer_roles(bundle.model(res_owner).raw)
            if not res_roles:
                continue
            det = Detector(bundle.model(det_role), rescorers=[bundle.model(r) for r in res_roles])
            preds = {}
            for k, page in enumerate(pages):
                found = det.detect(page, score_threshold=0.01)
                preds[str(k)] = (np.array([d.box for d in found]).reshape(-1, 4), np.array([d.score for d in found]))
            r = evaluate_detections(preds, truth)
            report[f"{det_role} + {'+'.join(res_roles)}"] = {"map50": r.map50, "map50_95": r.map50_95}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
