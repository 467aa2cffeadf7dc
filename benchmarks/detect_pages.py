"""Time whole-page detection on real pages, with and without the rescorer, int8 next to float.

    python benchmarks/detect_pages.py ../shared/data/documents_tobacco800 \
        --split training/splits/tobacco800_val.txt

``sigedge bench`` times generated pages, which have few candidate boxes; the rescorer's
cost grows with the candidates a page has, so this times the pages themselves. One
thread, each page run once to warm up and then ``--repeat`` times; prints p50/p90/max
milliseconds a page per configuration, the candidates a page and the second stage's time a
candidate (all its rescorers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import DetectOptions, Detector, rescorer_roles  # noqa: E402
from sigedge.detection_metrics import page_images  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402


def per_page_ms(fn, pages, repeat: int) -> np.ndarray:
    out = []
    for page in pages:
        fn(page)
        start = time.perf_counter()
        for _ in range(repeat):
            fn(page)
        out.append((time.perf_counter() - start) / repeat * 1000)
    return np.array(out)


def summary(ms: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="YOLO folder with images/")
    p.add_argument("--split", type=Path, default=None, help="only the image file names listed here")
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    pages = [load_image(f) for f in page_images(args.folder, args.split)]
    bundle = ModelBundle.load(args.bundle)
    report = {"pages": len(pages)}
    for role in ("detector", "detector_float"):
        spec = bundle.model(role)
        plain = Detector(spec, threads=1, options=DetectOptions(rescore=False))
        report[f"{spec.precision}_alone"] = summary(per_page_ms(plain.detect, pages, args.repeat))
        res_roles = rescorer_roles(spec.raw)
        if not res_roles:
            continue
        det = Detector(spec, threads=1, rescorers=[bundle.model(r) for r in res_roles])
        report[f"{spec.precision}_rescored"] = summary(per_page_ms(det.detect, pages, args.repeat))
        counts, sample = [], None
        for page in pages:
            canvas, boxes, _, _ = det.candidates(page, det.candidate_threshold)
            counts.append(min(len(boxes), det.max_rescored))
            if sample is None and len(boxes):
                sample = (canvas, boxes[:1])
        report[f"{spec.precision}_rescored"]["candidates_per_page_p50"] = float(np.median(counts))
        report[f"{spec.precision}_rescored"]["candidates_per_page_range"] = [int(min(counts)), int(max(counts))]
        if sample is not None:  # one candidate through the whole second stage (every rescorer, cut included)
            start = time.perf_counter()
            for _ in range(200):
                det.rescorer_probabilities(*sample)
            report[f"{spec.precision}_rescored"]["rescorers"] = len(res_roles)
            report[f"{spec.precision}_rescored"]["rescoring_ms_per_candidate"] = ((time.perf_counter() - start)
                                                                               / 200 * 1000)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
