"""Data for the detector: the real document pages, their page-disjoint split, crops and targets.

Real pages: ``documents_tobacco800`` (YOLO folder). Several files can come from one
document (pages of a letter, Roboflow re-exports of a page), so the split groups files by
*document* id and holds out whole documents. Training crops are square windows of a page
rescaled at random; the targets are those of ``training/detector_model.py``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import cv2
import numpy as np

from sigedge.detection_metrics import read_yolo_labels, yolo_pairs
from sigedge.imageio import load_image
from sigedge.normalize import to_gray

DOCUMENTS = "documents_tobacco800"
SPLIT_SEED = 2026
VAL_FRACTION = 0.2
SPLITS_DIR = Path(__file__).resolve().parent / "splits"


def document_id(image_path: Path) -> str:
    """``adh36e00-page2_1_jpg.rf.b11...jpg`` -> ``adh36e00`` (the scanned document)."""
    stem = image_path.name.split(".rf.")[0]
    stem = re.sub(r"_(jpg|jpeg|png|tif|tiff)$", "", stem)
    return stem.split("-page")[0]


def split_documents(data_root: Path, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """(train, val) image file names, page-disjoint by document, fixed by the seed."""
    names = [img.name for img, _ in yolo_pairs(data_root / DOCUMENTS)]
    docs = sorted({document_id(Path(n)) for n in names})
    random.Random(f"{seed}:{DOCUMENTS}").shuffle(docs)
    val_docs = set(docs[: int(round(VAL_FRACTION * len(docs)))])
    train = [n for n in names if document_id(Path(n)) not in val_docs]
    val = [n for n in names if document_id(Path(n)) in val_docs]
    return train, val


def write_splits(data_root: Path) -> tuple[Path, Path]:
    train, val = split_documents(data_root)
    SPLITS_DIR.mkdir(exist_ok=True)
    out = []
    for name, files in (("train", train), ("val", val)):
        path = SPLITS_DIR / f"tobacco800_{name}.txt"
        path.write_text("".join(f"{f}\n" for f in files))
        out.append(path)
    return out[0], out[1]


def load_pages(data_root: Path, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gray page uint8, boxes (N, 4) in its pixels) for the named files."""
    folder = data_root / DOCUMENTS
    wanted = set(names)
    pages = []
    for img_path, label_path in yolo_pairs(folder):
        if img_path.name not in wanted:
            continue
        gray = to_gray(load_image(img_path))
        h, w = gray.shape
        boxes = read_yolo_labels(label_path, w, h) if label_path is not None else np.zeros((0, 4))
        pages.append((gray, boxes.astype(np.float32)))
    return pages


def random_crop(gray: np.ndarray, boxes: np.ndarray, size: int, rng: np.random.Generator,
                scale_range: tuple[float, float] = (0.7, 1.4)) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` square window of the page rescaled by a random factor; boxes moved with it.

    Most windows are centred near a signature so that positives are not rare; boxes cut to
    less than 60 % of their area are dropped (a fragment is not a signature to find).
    """
    s = rng.uniform(*scale_range)
    h, w = gray.shape
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    page = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    b = boxes * s
    if len(b) and rng.random() < 0.6:
        x0, y0, x1, y1 = b[rng.integers(len(b))]
        cx, cy = _origin_showing(x0, x1, size, rng), _origin_showing(y0, y1, size, rng)
        ox, oy = int(np.clip(cx, min(0, nw - size), max(0, nw - size))), int(np.clip(cy, min(0, nh - size), max(0, nh - size)))
    else:
        ox = int(rng.integers(min(0, nw - size), max(0, nw - size) + 1))
        oy = int(rng.integers(min(0, nh - size), max(0, nh - size) + 1))
    paper = int(np.percentile(gray, 90))
    crop = np.full((size, size), paper, np.uint8)
    sx0, sy0 = max(0, ox), max(0, oy)
    sx1, sy1 = min(nw, ox + size), min(nh, oy + size)
    crop[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox] = page[sy0:sy1, sx0:sx1]
    if len(b) == 0:
        return crop, b.reshape(0, 4)
    moved = b - np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(moved, 0, size)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = visible >= 0.6 * np.maximum(area, 1e-6)
    return crop, clipped[keep]


def _origin_showing(lo: float, hi: float, size: int, rng: np.random.Generator) -> float:
    """A window start (one axis) that shows the span [lo, hi] whole when it fits."""
    first, last = hi - size + 4, lo - 4
    if first <= last:
        return float(rng.uniform(first, last))
    return float(lo - (size - (hi - lo)) / 2)


def photometric(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scan-like variation of a real page: contrast, brightness, blur, noise, JPEG."""
    img = gray.astype(np.float32)
    img = (img - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-30, 20)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    img += rng.normal(0, rng.uniform(0, 8), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        _, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
    return img


def make_targets(boxes: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap (g, g, 1), box (g, g, 4), mask (g, g, 1)) for boxes in a ``size`` square input."""
    g = size // stride
    heat = np.zeros((g, g), np.float32)
    box_t = np.zeros((g, g, 4), np.float32)
    mask = np.zeros((g, g, 1), np.float32)
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    for x0, y0, x1, y1 in boxes:
        w, h = (x1 - x0) / stride, (y1 - y0) / stride
        if w < 0.5 or h < 0.5:
            continue
        cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        ix, iy = min(int(cx), g - 1), min(int(cy), g - 1)
        sx, sy = max(0.6, w / 6), max(0.6, h / 6)
        gauss = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        heat = np.maximum(heat, gauss)
        heat[iy, ix] = 1.0
        box_t[iy, ix] = (np.log(w), np.log(h), cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat[..., None], box_t, mask
