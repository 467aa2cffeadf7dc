"""Signature-detector evaluation in numpy: IoU, COCO-style mAP, precision/recall at a threshold.

Single class: every box is a "signature", whatever class id a label file carries. Boxes are
(x0, y0, x1, y1) in pixels. Ground truth can be read from a YOLO folder (``images/`` +
``labels/``) so a held-out set exported for training can be scored without TensorFlow.

Conventions, chosen to match pycocotools so numbers are comparable with training logs:

* a prediction is kept at a score threshold ``t`` if ``score >= t``;
* matching is greedy per image in descending score; each prediction takes the unmatched
  ground-truth box it overlaps most, if that IoU is ``>= iou_threshold``;
* AP is the mean of the precision envelope sampled at the 101 recalls 0, 0.01, ..., 1;
  mAP@0.5:0.95 averages AP over the IoU thresholds 0.50, 0.55, ..., 0.95.

Edge cases are defined rather than NaN: with no ground truth, recall is 1.0 and AP is 0.0
if anything was predicted (1.0 if nothing was); with no predictions, precision is 1.0.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .metrics import check_resampling, percentile_interval

__all__ = [
    "IMAGE_EXTENSIONS",
    "COCO_IOU_THRESHOLDS",
    "DetectionReport",
    "iou_matrix",
    "overlap_matrix",
    "read_yolo_labels",
    "yolo_pairs",
    "read_split",
    "page_images",
    "match_detections",
    "average_precision",
    "evaluate_detections",
    "bootstrap_over_pages",
    "failure_cases",
]

log = logging.getLogger(__name__)

#: Image suffixes ``yolo_pairs`` picks up (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

#: IoU thresholds of COCO's mAP@0.5:0.95.
COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)

_RECALL_POINTS = np.linspace(0.0, 1.0, 101)

Predictions = dict[str, tuple[np.ndarray, np.ndarray]]
GroundTruth = dict[str, np.ndarray]


@dataclass(frozen=True)
class DetectionReport:
    """Summary of a detector on a labelled set.

    ``predictions``, ``precision``, ``recall`` and ``f1`` are at ``score_threshold`` and IoU 0.5
    (what a deployed detector does); ``map50`` and ``map50_95`` rank all predictions, whatever
    their score (what the model can do at any threshold).
    """

    images: int
    ground_truth: int
    predictions: int
    score_threshold: float
    precision: float
    recall: float
    f1: float
    map50: float
    map50_95: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes as float64 (N, 4); any empty input becomes (0, 4) so callers need no special case."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), not {arr.shape}")
    return arr


def _as_scores(scores: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"got {n} boxes but {len(arr)} scores")
    return arr


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU, float64 (N, M); 0 where the union is empty (two zero-area boxes)."""
    a, b = _as_boxes(a), _as_boxes(b)
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def overlap_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the smaller box's area, float64 (N, M); 0 where that area is 0.

    1.0 when one box lies inside the other, whatever their sizes (IoU would be small).
    """
    a, b = _as_boxes(a), _as_boxes(b)
    inter = _intersection(a, b)
    smaller = np.minimum(_area(a)[:, None], _area(b)[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def _parse_yolo_line(line: str, path: Path, lineno: int) -> tuple[float, float, float, float]:
    """(xc, yc, w, h) of one ``class xc yc w h`` line; anything else is the caller's mistake."""
    fields = line.split()
    try:
        values = [float(f) for f in fields]
    except ValueError:
        values = []
    ok = (
        len(values) == 5
        and all(np.isfinite(values))
        and values[0].is_integer()
        and values[0] >= 0
        and values[3] >= 0
        and values[4] >= 0
    )
    if not ok:
        raise UsageError(
            f"{path}:{lineno}: malformed YOLO label {line.strip()[:80]!r} "
            "(expected 'class xc yc w h', normalised to 0..1)"
        )
    return values[1], values[2], values[3], values[4]


def read_yolo_labels(path: Path, width: int, height: int) -> np.ndarray:
    """Pixel boxes (M, 4) of a YOLO label file for an image of ``width`` x ``height``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, not {width}x{height}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read YOLO labels {path}: {exc}") from exc
    rows = [_parse_yolo_line(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        return np.zeros((0, 4), dtype=np.float64)
    xc, yc, w, h = np.asarray(rows, dtype=np.float64).T
    return np.stack([(xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height], axis=1)


def yolo_pairs(directory: Path) -> list[tuple[Path, Path | None]]:
    """(image, label file or None) for every image of a YOLO folder, sorted by file name.

    A missing label file means "no signature on this page", as in YOLO's own loaders.
    """
    directory = Path(directory)
    images = directory / "images"
    if not images.is_dir():
        raise UsageError(f"{directory} is not a YOLO folder: it has no images/ directory")
    files = _image_files(images)
    labels = directory / "labels"
    pairs: list[tuple[Path, Path | None]] = []
    for image in files:
        label = labels / f"{image.stem}.txt"
        pairs.append((image, label if label.is_file() else None))
    return pairs


def _image_files(folder: Path) -> list[Path]:
    """The files of ``folder`` with an image suffix, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.name)


def read_split(split: Path) -> set[str]:
    """The image file names listed in a split file (one a line, blank lines ignored)."""
    try:
        return {ln.strip() for ln in Path(split).read_text(encoding="utf-8-sig").splitlines() if ln.strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {split}: {exc}") from None


def page_images(directory: Path, split: Path | None = None) -> list[Path]:
    """The page images of a folder (a YOLO folder's ``images/``, else the folder itself),
    sorted by name, only those named in ``split`` if given."""
    directory = Path(directory)
    if (directory / "images").is_dir():
        files = [img for img, _ in yolo_pairs(directory)]
    elif directory.is_dir():
        files = _image_files(directory)
    elif directory.exists():
        raise UsageError(f"{directory}: is not a folder")
    else:
        raise UsageError(f"{directory}: no such folder")
    if split is not None:
        wanted = read_split(split)
        files = [f for f in files if f.name in wanted]
        if 0 < len(files) < len(wanted):
            log.warning("%d of the %d names in %s are not in %s", len(wanted) - len(files), len(wanted), split,
                        directory)
    if not files:
        raise UsageError(f"{directory}: no page images" + (f" named in {split}" if split is not None else ""))
    return files


def _greedy_match(
    boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(order, matched): predictions in descending score, and the GT index each took (-1: none)."""
    boxes = _as_boxes(boxes)
    scores = _as_scores(scores, len(boxes))
    order = np.argsort(-scores, kind="mergesort")  # stable: ties keep input order
    ious = iou_matrix(boxes[order], gt)
    matched = np.full(len(order), -1, dtype=np.intp)
    free = np.ones(ious.shape[1], dtype=bool)
    if ious.shape[1] == 0:
        return order, matched
    for k in range(len(order)):
        candidates = np.where(free, ious[k], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            matched[k] = j
            free[j] = False
    return order, matched


def match_detections(
    boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(true-positive flags, order) for one image; flags follow ``order`` (descending score)."""
    order, matched = _greedy_match(boxes, scores, gt, iou_threshold)
    return matched >= 0, order


def _empty_prediction() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), dtype=np.float64), np.zeros(0, dtype=np.float64)


def _image_ids(predictions: Predictions, ground_truth: GroundTruth) -> list[str]:
    return sorted(set(predictions) | set(ground_truth))


def _ap_from_ranked(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP of pooled predictions (any order) given their TP flags."""
    if n_gt == 0:
        return 0.0 if len(scores) else 1.0
    if len(scores) == 0:
        return 0.0
    ctp = np.cumsum(tp[np.argsort(-scores, kind="mergesort")])
    precision = ctp / np.arange(1, len(ctp) + 1)
    recall = ctp / n_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(np.mean(sampled))


def average_precision(predictions: Predictions, ground_truth: GroundTruth, iou_threshold: float) -> float:
    """COCO-style AP at one IoU threshold, pooling every prediction of every image."""
    scores, flags = [], []
    n_gt = 0
    for image_id in _image_ids(predictions, ground_truth):
        boxes, s = predictions.get(image_id, _empty_prediction())
        gt = _as_boxes(ground_truth.get(image_id, np.zeros((0, 4))))
        tp, order = match_detections(boxes, s, gt, iou_threshold)
        scores.append(_as_scores(s, len(order))[order])
        flags.append(tp)
        n_gt += len(gt)
    if not scores:
        return _ap_from_ranked(np.zeros(0), np.zeros(0, dtype=bool), n_gt)
    return _ap_from_ranked(np.concatenate(scores), np.concatenate(flags), n_gt)


def _above(predictions: Predictions, score_threshold: float) -> Predictions:
    """Only the predictions a deployed detector would report (``score >= score_threshold``)."""
    kept: Predictions = {}
    for image_id, (boxes, scores) in predictions.items():
        boxes = _as_boxes(boxes)
        scores = _as_scores(scores, len(boxes))
        keep = scores >= score_threshold
        kept[image_id] = (boxes[keep], scores[keep])
    return kept


def _count_matches(predictions: Predictions, ground_truth: GroundTruth, iou: float) -> tuple[int, int, int]:
    """(true positives, predictions, ground-truth boxes) over all images."""
    tp = n_pred = n_gt = 0
    for image_id in _image_ids(predictions, ground_truth):
        boxes, scores = predictions.get(image_id, _empty_prediction())
        gt = _as_boxes(ground_truth.get(image_id, np.zeros((0, 4))))
        flags, _ = match_detections(boxes, scores, gt, iou)
        tp, n_pred, n_gt = tp + int(flags.sum()), n_pred + len(flags), n_gt + len(gt)
    return tp, n_pred, n_gt


def evaluate_detections(
    predictions: Predictions, ground_truth: GroundTruth, score_threshold: float = 0.3
) -> DetectionReport:
    """Precision/recall/F1 at ``score_threshold`` (IoU 0.5) plus mAP@0.5 and mAP@0.5:0.95."""
    tp, n_pred, n_gt = _count_matches(_above(predictions, score_threshold), ground_truth, 0.5)
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_gt if n_gt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    aps = [average_precision(predictions, ground_truth, float(t)) for t in COCO_IOU_THRESHOLDS]
    report = DetectionReport(
        images=len(_image_ids(predictions, ground_truth)),
        ground_truth=n_gt,
        predictions=n_pred,
        score_threshold=float(score_threshold),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        map50=aps[0],
        map50_95=float(np.mean(aps)),
    )
    log.debug("detection report: %s", report)
    return report


def _copies(chosen: list[str], table: dict[str, Any], empty: Any) -> dict[str, Any]:
    """``table`` at the ``chosen`` pages; a page drawn twice counts twice, under its own names."""
    return {f"{k}:{p}": table.get(p, empty) for k, p in enumerate(chosen)}


def bootstrap_over_pages(
    predictions: Predictions, ground_truth: GroundTruth, score_threshold: float, resamples: int = 1000,
    seed: int = 0, level: float = 0.95, baseline: tuple[Predictions, float] | None = None
) -> dict:
    """How far the report could move on other pages like these: resample the pages with
    replacement (each keeps its boxes and predictions), recompute, and give the central
    ``level`` share of each figure (percentile intervals).

    Pages, not boxes, are resampled: a page's signatures share its layout and scan, and one
    hard page (a collage of small signatures) moves mAP by points on a few dozen pages.
    ``baseline``: another detector's (predictions, score threshold) on the same pages; each
    resample then scores both on the same pages (a paired bootstrap) and the report adds the
    intervals of the differences (these predictions minus the baseline's) and how often these
    were better. A page that only the baseline predicts on is resampled too, as a page on
    which these predictions found nothing."""
    check_resampling(resamples, level)
    pages = _image_ids(predictions, ground_truth)
    if baseline is not None:
        pages = sorted(set(pages) | set(baseline[0]))
    if not pages:
        raise ValueError("no pages to resample")
    rng = np.random.default_rng(seed)
    names = ("map50", "map50_95", "precision", "recall")
    figures: dict[str, list[float]] = {name: [] for name in names}
    differences: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        chosen = [pages[k] for k in rng.integers(len(pages), size=len(pages))]
        truth = _copies(chosen, ground_truth, np.zeros((0, 4)))
        report = evaluate_detections(_copies(chosen, predictions, _empty_prediction()), truth, score_threshold)
        for name in names:
            figures[name].append(getattr(report, name))
        if baseline is not None:
            other = evaluate_detections(_copies(chosen, baseline[0], _empty_prediction()), truth, baseline[1])
            for name in names:
                differences[name].append(getattr(report, name) - getattr(other, name))
    out = {"resamples": resamples, "seed": seed, "level": level, "unit": "page",
           **{f"{name}_interval": percentile_interval(values, level) for name, values in figures.items()}}
    if baseline is not None:
        for name, values in differences.items():
            out[f"difference_{name}_interval"] = percentile_interval(values, level)
            out[f"share_better_{name}"] = float(np.mean(np.asarray(values) > 0))
    return out


def failure_cases(
    predictions: Predictions, ground_truth: GroundTruth, score_threshold: float, iou: float = 0.5
) -> dict[str, dict[str, list[list[float]]]]:
    """Per image with a mistake at ``score_threshold``: its false positives and missed GT boxes."""
    cases: dict[str, dict[str, list[list[float]]]] = {}
    kept = _above(predictions, score_threshold)
    for image_id in _image_ids(kept, ground_truth):
        boxes, scores = kept.get(image_id, _empty_prediction())
        gt = _as_boxes(ground_truth.get(image_id, np.zeros((0, 4))))
        order, matched = _greedy_match(boxes, scores, gt, iou)
        false_positives = _as_boxes(boxes)[order][matched < 0]
        missed = gt[np.setdiff1d(np.arange(len(gt)), matched[matched >= 0])]
        if len(false_positives) or len(missed):
            cases[image_id] = {"false_positives": false_positives.tolist(), "missed": missed.tolist()}
    return cases
