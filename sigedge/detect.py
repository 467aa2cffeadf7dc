"""Signature detection on a page: letterbox, run the detector, decode peaks, NMS.

The detector (trained in ``training/train_detector.py``) is anchor-free: for each cell of
a stride-``s`` grid it predicts a logit that a signature's centre lies there and the box
around that centre as ``log(w/s), log(h/s), dx, dy``. Decoding keeps the local maxima of
the heatmap above the score threshold (a 3x3 max filter, as in CenterNet), turns them into
boxes, removes overlaps with non-maximum suppression and maps the boxes back to the
input image's pixels. Thresholds and the stride come from the bundle manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .bundle import ModelSpec
from .detection_metrics import iou_matrix, overlap_matrix
from .errors import ModelError
from .interpreter import TFLiteModel, TFLiteMultiOutputModel
from .normalize import to_gray

__all__ = ["Detection", "DetectOptions", "Detector", "Letterbox", "letterbox", "decode_heatmap", "nms", "crop",
           "rescorer_input", "rescorer_roles", "suppress_overlapping", "rank_rescored", "ranked_boxes",
           "RANKING_FLOOR"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One signature found on a page."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the input image's pixels
    score: float  # probability-like confidence in [0, 1]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectOptions:
    """How detections are decoded. ``None`` takes the bundle manifest's value."""

    score_threshold: float | None = None
    nms_iou: float | None = None
    max_detections: int = 50
    #: Context added around each box when cropping, as a fraction of the box size.
    crop_padding: float = 0.08
    #: Re-score the detector's candidates with the bundle's rescorer when it has one
    #: (off: the detector's own scores against its own threshold).
    rescore: bool = True


@dataclass(frozen=True)
class Letterbox:
    """How a page was fitted into the square model input (to map boxes back)."""

    scale: float
    pad_x: int
    pad_y: int
    width: int  # the original image's size
    height: int


#: ink level (paper 0, ink 1) of every gray value, as float32 arithmetic gives it
_INK_LEVELS = (1.0 - np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float32)
_INK_LEVELS.setflags(write=False)


def letterbox(gray: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Fit a grayscale page (uint8, paper light) into a ``size`` square, aspect kept.

    Returns the model input (float32, paper 0 and ink 1, padding counted as paper) and the
    transform. Pages are shrunk with area averaging so thin strokes survive.
    """
    h, w = gray.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = gray if (nw, nh) == (w, h) else cv2.resize(gray, (nw, nh), interpolation=interp)
    px, py = (size - nw) // 2, (size - nh) // 2
    if resized.dtype == np.uint8:  # a table lookup: the values of 1 - gray / 255 in a tenth of the time
        ink = cv2.LUT(np.ascontiguousarray(resized), _INK_LEVELS).reshape(nh, nw)
    else:
        ink = np.ascontiguousarray(1.0 - resized.astype(np.float32) / 255.0)
    # padded by OpenCV rather than copied into np.zeros: a fresh zeroed page-sized buffer
    # costs more in page faults (1.5-3 ms here) than everything else in this function
    canvas = ink if (nw, nh) == (size, size) else cv2.copyMakeBorder(
        ink, py, size - nh - py, px, size - nw - px, cv2.BORDER_CONSTANT, value=0.0)
    return canvas, Letterbox(scale, px, py, w, h)


def rescorer_input(canvas: np.ndarray, box: tuple[float, float, float, float], height: int, width: int,
                   context: float) -> np.ndarray:
    """A candidate box with ``context`` of its size around it, fitted into ``height`` x ``width``.

    ``canvas`` is the detector's input (paper 0, ink 1) and ``box`` is in its pixels, so the
    rescorer sees candidates at the scale the detector was trained at, whatever the scan's
    resolution. Aspect is kept (the rest is paper) so a long line of text does not look like
    a compact scribble. Shared by the rescorer's training and the runtime.
    """
    x0, y0, x1, y1 = box
    cw, ch = (x1 - x0) * context, (y1 - y0) * context
    h, w = canvas.shape[:2]
    xa, ya = min(w - 1, max(0, int(np.floor(x0 - cw)))), min(h - 1, max(0, int(np.floor(y0 - ch))))
    xb, yb = min(w, max(xa + 1, int(np.ceil(x1 + cw)))), min(h, max(ya + 1, int(np.ceil(y1 + ch))))
    region = np.ascontiguousarray(canvas[ya:yb, xa:xb], np.float32)
    scale = min(width / region.shape[1], height / region.shape[0])
    nw, nh = max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((height, width), np.float32)
    px, py = (width - nw) // 2, (height - nh) // 2
    out[py:py + nh, px:px + nw] = cv2.resize(region, (nw, nh), interpolation=interp)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def decode_heatmap(heat_logits: np.ndarray, box: np.ndarray, stride: int, score_threshold: float,
                   max_candidates: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) in model-input pixels and scores (N,) from the detector's two maps.

    ``heat_logits`` (h, w) or (h, w, 1); ``box`` (h, w, 4) = log(w/stride), log(h/stride),
    dx, dy. A cell is a candidate if it is the maximum of its 3x3 neighbourhood and its
    sigmoid score reaches the threshold.
    """
    heat = _sigmoid(np.asarray(heat_logits, np.float32).reshape(box.shape[:2]))
    peaks = heat == cv2.dilate(heat, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(peaks & (heat >= score_threshold))
    scores = heat[ys, xs]
    order = np.argsort(-scores, kind="stable")[:max_candidates]
    ys, xs, scores = ys[order], xs[order], scores[order]
    b = box[ys, xs].astype(np.float32)
    bw = np.exp(np.clip(b[:, 0], -4, 8)) * stride
    bh = np.exp(np.clip(b[:, 1], -4, 8)) * stride
    cx = (xs + b[:, 2]) * stride
    cy = (ys + b[:, 3]) * stride
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).reshape(-1, 4)
    return boxes, scores.astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order
    iou = iou_matrix(boxes[order], boxes[order])
    return order[np.array(_greedy_keep(iou > iou_threshold), dtype=int)]


def _greedy_keep(clash: np.ndarray) -> list[int]:
    """Positions kept when walking in order and dropping each one that clashes with a kept one
    (``clash[i, j]``: position i and j may not both stay). Shared by both suppressions."""
    kept: list[int] = []
    suppressed = np.zeros(len(clash), bool)
    for i in range(len(clash)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= clash[i]
    return kept


def suppress_overlapping(boxes: np.ndarray, order: list[int], min_overlap: float) -> list[int]:
    """``order`` without any box whose overlap with a box kept before it reaches ``min_overlap``.

    Overlap is the intersection over the *smaller* box's area, so a box that swallows a
    better one (two signatures and the gap between them, proposed as one) goes, where IoU
    would keep it. Used after rescoring, which can lift such a box above the threshold.
    Greedy in ``order``, as :func:`nms`.
    """
    overlap = overlap_matrix(boxes[order], boxes[order]) if order else np.zeros((0, 0))
    return [order[pos] for pos in _greedy_keep((overlap >= min_overlap) & (overlap > 0))]


def rank_rescored(boxes: np.ndarray, detector_scores: np.ndarray, probabilities: np.ndarray, score_threshold: float,
                  max_overlap: float) -> tuple[list[int], np.ndarray]:
    """(order, fused scores): the second stage's decision, given the rescorer's probabilities.

    A box's score is the geometric mean of the detector's and the rescorer's probability;
    boxes at or above ``score_threshold`` are ranked best first, and a box covering
    ``max_overlap`` of a better one is dropped (:func:`suppress_overlapping`). Training
    validates its Keras rescorer with this same function.
    """
    fused = np.sqrt(np.asarray(detector_scores, np.float32) * np.asarray(probabilities, np.float32).reshape(-1))
    order = [int(i) for i in np.argsort(-fused, kind="stable") if fused[i] >= score_threshold]
    return suppress_overlapping(np.asarray(boxes), order, max_overlap), fused


def crop(image: np.ndarray, detection: Detection, padding: float = 0.08, isolate: bool = False,
         core: float = 0.1) -> np.ndarray:
    """The image region of a detection, with some context, clipped to the image.

    The padding keeps strokes that overshoot a slightly tight box. With ``isolate``, ink
    that does not reach the box's *core* (the box shrunk by ``core`` of its width and
    height on every side) is painted out: a printed label under the signature line or a
    neighbouring word stays out of the crop even when the box's edge cuts through it,
    while every stroke connected to the signature's body stays in.
    """
    x0, y0, x1, y1 = detection.box
    pw, ph = (x1 - x0) * padding, (y1 - y0) * padding
    h, w = image.shape[:2]
    xa, ya = max(0, int(np.floor(x0 - pw))), max(0, int(np.floor(y0 - ph)))
    xb, yb = min(w, int(np.ceil(x1 + pw))), min(h, int(np.ceil(y1 + ph)))
    out = image[ya:yb, xa:xb].copy()
    if isolate and out.size:
        cw, ch = (x1 - x0) * core, (y1 - y0) * core
        inner = (int(round(x0 + cw)) - xa, int(round(y0 + ch)) - ya,
                 int(round(x1 - cw)) - xa, int(round(y1 - ch)) - ya)
        out[~_ink_reaching(out, inner)] = 255
    return out


def _ink_reaching(region: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of everything except ink components lying wholly outside ``box`` (region coords)."""
    from .normalize import binarize, flatten_background

    ink = binarize(flatten_background(to_gray(region))).astype(np.uint8)
    n, labels = cv2.connectedComponents(ink, connectivity=8)
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), max(0, box[2]), max(0, box[3])
    inside = np.unique(labels[y0:max(y0 + 1, y1), x0:max(x0 + 1, x1)])
    outside_ink = (labels > 0) & ~np.isin(labels, inside)
    return ~outside_ink


def rescorer_roles(detector_entry: dict) -> list[str]:
    """The manifest roles of a detector entry's rescorers, in order (none without rescoring).

    ``rescoring.models`` lists an ensemble; ``rescoring.model`` (one name) is the older form.
    """
    rescoring = detector_entry.get("rescoring") or {}
    if "models" in rescoring:
        return [str(r) for r in rescoring["models"]]
    return [str(rescoring["model"])] if rescoring.get("model") else []


class Detector:
    """The bundle's signature detector, run on whole pages.

    With ``rescorers`` (the manifest entry's ``rescoring`` block names them, see
    :func:`rescorer_roles`), the detector's candidates down to ``candidate_threshold`` (the
    ``max_candidates`` best of them) are each cut from the detector's input and classified
    "signature or not" (by the mean logit of the rescorers); a box's score is then the
    geometric mean of the two probabilities and the threshold is
    ``rescoring.score_threshold``. Rescoring re-orders boxes, so a box covering
    ``max_overlap`` of a better-scored one (intersection over the smaller area) is dropped.
    """

    def __init__(self, spec: ModelSpec, threads: int = 1, options: DetectOptions | None = None,
                 rescorers: Sequence[ModelSpec] = ()):
        self.spec = spec
        self.options = options or DetectOptions()
        raw = spec.raw
        try:
            outs = raw["outputs"]
            self.heatmap_name, self.box_name = outs["heatmap"], outs["box"]
            dec = raw["decoding"]
            self.stride = int(dec["stride"])
            default_threshold = float(dec["score_threshold"])
            self.nms_iou = float(self.options.nms_iou if self.options.nms_iou is not None else dec["nms_iou"])
            self._rescorers: list[TFLiteModel] = []
            rescoring = raw.get("rescoring")
            if rescorers and rescoring and self.options.rescore:
                if rescoring.get("fusion") != "geometric_mean":
                    raise ModelError(f"rescoring fusion {rescoring.get('fusion')!r} is not supported")
                self.candidate_threshold = float(rescoring["candidate_threshold"])
                self.max_rescored = int(rescoring["max_candidates"])
                self.rescore_context = float(rescoring["context"])
                self.max_overlap = float(rescoring["max_overlap"])
                default_threshold = float(rescoring["score_threshold"])
                if len(rescorers) != len(rescorer_roles(raw)):
                    raise ModelError(f"the manifest names {len(rescorer_roles(raw))} rescorer(s) for "
                                     f"{spec.role!r}, {len(rescorers)} were given")
                self._rescorers = [self._load_rescorer(r, threads) for r in rescorers]
            self.score_threshold = float(self.options.score_threshold if self.options.score_threshold is not None
                                         else default_threshold)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"manifest entry {spec.role!r} lacks the detector contract ({exc})") from exc
        self._model = TFLiteMultiOutputModel(spec.file, [self.heatmap_name, self.box_name], threads=threads)
        expected = (1, spec.input_height, spec.input_width, spec.input_channels)
        if self._model.input_shape != expected:
            raise ModelError(f"{spec.file.name}: input shape {self._model.input_shape} does not match "
                             f"the manifest's {expected}")
        if spec.input_height != spec.input_width:
            raise ModelError(f"{spec.file.name}: the detector input must be square")
        self.size = spec.input_height

    @staticmethod
    def _load_rescorer(spec: ModelSpec, threads: int) -> TFLiteModel:
        model = TFLiteModel(spec.file, threads=threads)
        expected = (1, spec.input_height, spec.input_width, 1)
        if model.input_shape != expected:
            raise ModelError(f"{spec.file.name}: input shape {model.input_shape} does not match the manifest's "
                             f"{expected}")
        if spec.raw.get("output", {}).get("kind") != "logit":
            raise ModelError(f"{spec.file.name}: the rescorer's output must be declared a logit")
        return model

    @property
    def backend(self) -> str:
        return self._model.backend

    @property
    def rescores(self) -> bool:
        """Whether candidates are re-scored by a second stage."""
        return bool(self._rescorers)

    def raw_outputs(self, page: np.ndarray) -> tuple[dict[str, np.ndarray], Letterbox]:
        """The model's maps for a decoded page image (gray or BGR uint8)."""
        out, _, lb = self._run(page)
        return out, lb

    def _run(self, page: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, Letterbox]:
        canvas, lb = letterbox(to_gray(page), self.size)
        return self._model(canvas[..., None]), canvas, lb

    def candidates(self, page: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           Letterbox]:
        """The detector's own boxes after NMS: (input canvas, boxes in canvas pixels, scores, letterbox)."""
        out, canvas, lb = self._run(page)
        boxes, scores = decode_heatmap(out[self.heatmap_name], out[self.box_name], self.stride, score_threshold,
                                       max_candidates=4 * self.options.max_detections)
        keep = nms(boxes, scores, self.nms_iou)
        return canvas, boxes[keep], scores[keep], lb

    def rescorer_probabilities(self, canvas: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The second stage's probability that each box (canvas pixels) holds a signature.

        With several rescorers (an ensemble of independently trained ones) it is the sigmoid
        of their mean logit: averaging logits keeps one member's confident veto from
        being diluted to nothing, as averaging probabilities would, without letting it rule.
        """
        return _sigmoid(self.rescorer_logits(canvas, boxes).mean(axis=0)).astype(np.float32)

    def rescorer_logits(self, canvas: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Every rescorer's logit for every box (canvas pixels): (rescorers, boxes), float32."""
        if not self._rescorers:
            raise ModelError("this detector has no rescorer")
        logits = np.zeros((len(self._rescorers), len(boxes)), np.float32)
        by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
        for k, model in enumerate(self._rescorers):
            h, w = model.input_shape[1:3]
            if (h, w) not in by_shape:  # members of one input size share their crops
                by_shape[h, w] = [rescorer_input(canvas, tuple(b), h, w, self.rescore_context)[..., None]
                                  for b in boxes]
            logits[k] = [float(np.ravel(model(c))[0]) for c in by_shape[h, w]]
        return logits

    def rescore(self, canvas: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Geometric mean of the detector's and the rescorer's probabilities, box by box."""
        if not self._rescorers:
            return scores
        return np.sqrt(np.asarray(scores, np.float32) * self.rescorer_probabilities(canvas, boxes))

    def detect(self, page: np.ndarray, score_threshold: float | None = None) -> list[Detection]:
        """Signatures on a decoded page, best first, boxes in the page's pixels."""
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        first = min(thr, self.candidate_threshold) if self._rescorers else thr
        canvas, boxes, scores, lb = self.candidates(page, first)
        if self._rescorers:  # the best few only: bounds the time a page takes
            boxes, scores = boxes[: self.max_rescored], scores[: self.max_rescored]
            order, scores = rank_rescored(boxes, scores, self.rescorer_probabilities(canvas, boxes), thr,
                                          self.max_overlap)
        else:
            order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= thr]
        return [Detection(_to_page(boxes[i], lb), float(scores[i])) for i in order[: self.options.max_detections]]


#: The lowest score kept when every box is ranked for mAP (which integrates over all thresholds).
RANKING_FLOOR = 0.01


def ranked_boxes(detector: Detector, page: np.ndarray, threshold: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) in page pixels, scores (N,)), best first: every signature the detector finds
    on a decoded page down to :data:`RANKING_FLOOR`, or down to ``threshold`` (default: the
    detector's) if that is lower, as ``sigedge evaluate-detector`` ranks them for mAP."""
    threshold = detector.score_threshold if threshold is None else threshold
    found = detector.detect(page, score_threshold=min(RANKING_FLOOR, threshold))
    return np.array([d.box for d in found]).reshape(-1, 4), np.array([d.score for d in found])


def _to_page(box: np.ndarray, lb: Letterbox) -> tuple[float, float, float, float]:
    x0 = (box[0] - lb.pad_x) / lb.scale
    y0 = (box[1] - lb.pad_y) / lb.scale
    x1 = (box[2] - lb.pad_x) / lb.scale
    y1 = (box[3] - lb.pad_y) / lb.scale
    clip = lambda v, hi: float(min(max(v, 0.0), hi))  # noqa: E731
    return (clip(x0, lb.width), clip(y0, lb.height), clip(x1, lb.width), clip(y1, lb.height))


def annotate(page: np.ndarray, detections: list[Detection], path: Path | None = None) -> np.ndarray:
    """A BGR copy of the page with the detections drawn (and written to ``path``)."""
    img = page.copy() if page.ndim == 3 else cv2.cvtColor(page, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(img.shape[:2]) / 500))
    for d in detections:
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 255), thick)
        cv2.putText(img, f"{d.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 0, 255), thick)
    if path is not None:
        if not cv2.imwrite(str(path), img):
            raise OSError(f"cannot write {path}")
    return img
