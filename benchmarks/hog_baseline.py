"""HOG + cosine baseline on the same protocol as ``sigedge evaluate``.

    python benchmarks/hog_baseline.py training/splits/sigcomp2011_dutch_val.csv --refs 5

The same normalised canvases as the embedder sees (sigedge.normalize), described by a
histogram of oriented gradients (9 unsigned bins, 8x8 cells, 2x2 blocks, L2-Hys) written
in numpy because OpenCV 5 dropped ``cv2.HOGDescriptor``. Scores: fused cosine, as sigedge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge.clean import clean_signature  # noqa: E402
from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.evaluate_cli import read_labels  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.normalize import NormalizeOptions, normalize_signature  # noqa: E402
from sigedge.scoring import l2_normalize  # noqa: E402


def hog(canvas: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    gx = cv2.Sobel(canvas, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(canvas, cv2.CV_32F, 0, 1, ksize=1)
    mag = np.hypot(gx, gy)
    ang = (np.degrees(np.arctan2(gy, gx)) % 180.0) / (180.0 / bins)
    lo = np.floor(ang).astype(int) % bins
    hi = (lo + 1) % bins
    w_hi = ang - np.floor(ang)
    h, w = canvas.shape
    ch, cw = h // cell, w // cell
    hist = np.zeros((ch, cw, bins), np.float32)
    cy = (np.arange(h) // cell).clip(max=ch - 1)
    cx = (np.arange(w) // cell).clip(max=cw - 1)
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    np.add.at(hist, (yy, xx, lo), mag * (1 - w_hi))
    np.add.at(hist, (yy, xx, hi), mag * w_hi)
    blocks = np.concatenate([hist[:-1, :-1], hist[1:, :-1], hist[:-1, 1:], hist[1:, 1:]], axis=2)
    blocks /= np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-6
    blocks = np.minimum(blocks, 0.2)
    blocks /= np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-6
    return blocks.ravel()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("labels", type=Path)
    p.add_argument("--refs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    opts = NormalizeOptions(height=128, width=256)
    rows = read_labels(args.labels)
    feats = [hog(normalize_signature(clean_signature(load_image(path)), opts).canvas) for path, _, _ in rows]
    emb = l2_normalize(np.stack(feats))
    rep = report_from_scores(protocol_scores(emb, [r[1] for r in rows], [r[2] for r in rows], args.refs, args.seed),
                             args.refs)
    out = {"method": "HOG + cosine", "labels": str(args.labels), "refs": args.refs, "eer_skilled": rep.eer_skilled,
           "eer_random": rep.eer_random, "frr_at_far1_skilled": rep.frr_at_far1_skilled,
           "frr_at_far1_random": rep.frr_at_far1_random, "dim": int(emb.shape[1])}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
