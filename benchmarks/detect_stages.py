"""Where a page's detection time goes, stage by stage, next to the arithmetic the runtime used
before (same process, same pages, one thread).

    python benchmarks/detect_stages.py ../shared/data/documents_tobacco800 \
        --split training/splits/tobacco800_val.txt

Stages of ``Detector.detect`` before the second stage: the darkest channel of a colour page
(``to_gray``), the letterboxed model input (``letterbox``), the int8 input quantisation and
the model call (``invoke``). Each of the first three is also timed as it was written before
(``image.min(axis=2)``; a zeroed canvas filled with ``1 - gray / 255``; a temporary array per
quantisation step), and the outputs are checked to be identical. Prints the median
milliseconds a page of each and the old/new ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import DetectOptions, Detector, letterbox  # noqa: E402
from sigedge.detection_metrics import page_images  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.interpreter import _quantize  # noqa: E402
from sigedge.normalize import to_gray  # noqa: E402


def letterbox_before(gray: np.ndarray, size: int) -> np.ndarray:
    h, w = gray.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size), np.float32)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = 1.0 - resized.astype(np.float32) / 255.0
    return canvas


def quantize_before(x: np.ndarray, shape, q) -> np.ndarray:
    info = np.iinfo(q.dtype)
    return np.clip(np.round(np.asarray(x, np.float32).reshape(shape) / q.scale + q.zero_point),
                   info.min, info.max).astype(q.dtype)


def median_ms(fn, inputs, repeat: int) -> float:
    times = []
    for x in inputs:
        fn(x)
        for _ in range(repeat):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder (or YOLO folder) of page images")
    ap.add_argument("--split", type=Path, default=None, help="only the image file names listed here")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    pages = [load_image(f) for f in page_images(args.folder, args.split)]
    det = Detector(ModelBundle.load(args.bundle).model("detector"), threads=1, options=DetectOptions(rescore=False))
    model = det._model
    grays = [to_gray(p) for p in pages]
    canvases = [letterbox(g, det.size)[0][..., None] for g in grays]
    colour = [p for p in pages if p.ndim == 3]
    assert all(np.array_equal(to_gray(p), p.min(axis=2)) for p in colour)
    assert all(np.array_equal(c[..., 0], letterbox_before(g, det.size)) for c, g in zip(canvases, grays))
    q = model._in_q
    if q is not None:
        assert all(np.array_equal(_quantize(c, model.input_shape, q), quantize_before(c, model.input_shape, q))
                   for c in canvases)
    stages = {
        "to_gray": (lambda p: p.min(axis=2), to_gray, colour),
        "letterbox": (lambda g: letterbox_before(g, det.size), lambda g: letterbox(g, det.size), grays),
    }
    if q is not None:
        stages["quantise_input"] = (lambda c: quantize_before(c, model.input_shape, q),
                                    lambda c: _quantize(c, model.input_shape, q), canvases)
    report = {"pages": len(pages), "colour_pages": len(colour), "precision": det.spec.precision, "stages": {}}
    for name, (before, now, inputs) in stages.items():
        if not inputs:
            continue
        b, n = median_ms(before, inputs, args.repeat), median_ms(now, inputs, args.repeat)
        report["stages"][name] = {"before_ms": b, "now_ms": n, "before_over_now": b / n}
    report["stages"]["model_call"] = {"now_ms": median_ms(model, canvases, args.repeat)}
    report["stages"]["detect_alone"] = {"now_ms": median_ms(det.detect, pages, args.repeat)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
