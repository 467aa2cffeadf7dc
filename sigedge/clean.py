"""Cleaning a signature crop: ruled lines, box borders, specks, and (with a bundle that
ships one) a learned cleaner that keeps only the signature's ink.

The classic cleaner is deliberately conservative: a line is removed only when it is
straight and spans most of the crop (a box border, a ruled line), so that long signature
flourishes survive. It cannot tell printed text or a stamp from handwriting. The learned
cleaner (:class:`LearnedCleaner`, the bundle's ``cleaner`` model) can: a small int8
encoder-decoder that marks, pixel by pixel, the ink that belongs to the signature; every
other ink pixel is painted white. Its contract (input canvas, output, threshold) is the
manifest entry's, and its input canvas is made by :func:`cleaner_canvas`, the same code
training used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .normalize import binarize, flatten_background, remove_specks, to_gray

__all__ = ["CleanOptions", "clean_signature", "line_mask", "cleaner_canvas", "LearnedCleaner", "CanvasPlacement"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanOptions:
    remove_lines: bool = True
    #: A line must span at least this share of the crop's width (or height) to be removed.
    min_line_span: float = 0.75
    #: Off by default in the pipeline: normalisation already drops specks with the same
    #: rule the embedder was trained with, and a second pass here, on the uncropped scan,
    #: also took i-dots and short strokes (SigComp validation, shipped int8 model: skilled
    #: EER 20.2 % with it, 19.1 % without; SSBI unchanged). ``sigedge clean`` turns it on.
    remove_specks: bool = False
    speck_fraction: float = 0.01
    #: ``classic``: the rules above only. ``learned``: also paint out every ink pixel the
    #: bundle's learned cleaner does not mark as signature (needs a bundle with a ``cleaner``
    #: model). ``auto``: learned when the bundle has a cleaner, classic otherwise. Classic by
    #: default: on crops with printed text or cheque print the learned cleaner gains 9-15
    #: points of skilled EER, but on clean real scans it cost 4.5 (SigComp validation,
    #: ``benchmarks/cleaner.py``), and the scorer's thresholds were calibrated without it.
    method: Literal["classic", "learned", "auto"] = "classic"
    #: Learned cleaning only: it is applied when it removes at least this share of the crop's
    #: ink, else the crop gets the classic rules alone, so that a clean scan stays as it was.
    #: ``None``: the bundle's ``cleaning.min_removed_share`` (0 when the manifest has none).
    min_removed_share: float | None = None


def line_mask(ink: np.ndarray, min_span: float = 0.75) -> np.ndarray:
    """Pixels of straight horizontal/vertical lines spanning ``min_span`` of the image."""
    h, w = ink.shape
    u8 = ink.astype(np.uint8)
    out = np.zeros_like(ink, dtype=bool)
    for length, shape, span_axis in ((int(w * min_span), (1, 0), 1), (int(h * min_span), (0, 1), 0)):
        if length < 20:
            continue
        ksize = (length, 1) if shape == (1, 0) else (1, length)
        # Opening keeps only runs at least `length` long; a 1-px tolerance in the other
        # direction (via a slight dilation first) lets slightly slanted scans through.
        lines = cv2.morphologyEx(u8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, ksize))
        if lines.any():
            # Thicken a little so anti-aliased line edges go too.
            lines = cv2.dilate(lines, np.ones((3, 3), np.uint8))
            out |= lines.astype(bool)
    return out


@dataclass(frozen=True)
class CanvasPlacement:
    """Where a crop sits inside the cleaner's canvas: its top-left corner and size there."""

    top: int
    left: int
    height: int
    width: int


def cleaner_canvas(flat: np.ndarray, height: int, width: int) -> tuple[np.ndarray, CanvasPlacement]:
    """The learned cleaner's input: a background-flattened gray crop (uint8, paper ~255),
    fitted into ``height`` x ``width`` with its aspect kept and centred, as float32 with
    paper 0 and ink 1 (the convention of every sigedge model)."""
    h, w = flat.shape
    scale = min(height / h, width / w)
    nh, nw = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(flat, (nw, nh), interpolation=interp)
    canvas = np.zeros((height, width), np.float32)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top:top + nh, left:left + nw] = 1.0 - small.astype(np.float32) / 255.0
    return canvas, CanvasPlacement(top, left, nh, nw)


def canvas_to_crop(canvas_map: np.ndarray, placement: CanvasPlacement, shape: tuple[int, int]) -> np.ndarray:
    """A per-pixel map over the cleaner's canvas brought back onto the crop's pixels."""
    p = placement
    region = np.ascontiguousarray(canvas_map[p.top:p.top + p.height, p.left:p.left + p.width], dtype=np.float32)
    return cv2.resize(region, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


class LearnedCleaner:
    """The bundle's learned cleaner: which ink pixels of a crop belong to the signature.

    The manifest entry (role ``cleaner``) gives the input canvas (``input.height``,
    ``input.width``, made by :func:`cleaner_canvas`), the output (a logit per canvas pixel
    that the pixel is signature ink) and ``cleaning.threshold`` (a probability). The mask is
    computed on the canvas, brought back to the crop's size and grown by ``cleaning.grow``
    canvas pixels, so that the edges of kept strokes, which the canvas blurs, stay whole.
    """

    def __init__(self, spec, threads: int = 1):
        from .errors import ModelError
        from .interpreter import TFLiteModel

        cleaning = spec.raw.get("cleaning")
        if not isinstance(cleaning, dict) or "threshold" not in cleaning:
            raise ModelError(f"manifest entry {spec.role!r} has no cleaning.threshold")
        self.spec = spec
        self.threshold = float(cleaning["threshold"])
        self.grow = float(cleaning.get("grow", 1.0))
        self.min_removed_share = float(cleaning.get("min_removed_share", 0.0))
        self._model = TFLiteModel(spec.file, threads=threads)
        expected = (1, spec.input_height, spec.input_width, spec.input_channels)
        if self._model.input_shape != expected or self._model.output_shape[1:3] != expected[1:3]:
            raise ModelError(f"{spec.file.name}: input {self._model.input_shape} / output {self._model.output_shape} "
                             f"do not match the manifest's {expected}")

    def signature_probability(self, flat: np.ndarray) -> np.ndarray:
        """Probability (float32, the crop's shape) that each pixel is signature ink."""
        canvas, placement = cleaner_canvas(flat, self.spec.input_height, self.spec.input_width)
        logits = self._model(canvas[..., None])[..., 0]
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
        return canvas_to_crop(prob, placement, flat.shape)

    def keep_mask(self, flat: np.ndarray) -> np.ndarray:
        """Boolean mask (the crop's shape) of the pixels to keep: signature ink and its edges."""
        keep = self.signature_probability(flat) >= self.threshold
        h, w = flat.shape
        # one canvas pixel is this many crop pixels
        radius = int(round(self.grow * max(h / self.spec.input_height, w / self.spec.input_width, 1.0)))
        if radius > 0 and keep.any():
            keep = cv2.dilate(keep.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0
        return keep


def clean_signature(image: np.ndarray, options: CleanOptions | None = None,
                    cleaner: LearnedCleaner | None = None) -> np.ndarray:
    """uint8 gray image of the crop with background flattened and clutter painted white.

    With ``cleaner`` (and ``options.method`` other than ``classic``) ink that the learned
    cleaner does not mark as signature is painted white as well.
    """
    return clean_signature_with_share(image, options, cleaner)[0]


def clean_signature_with_share(image: np.ndarray, options: CleanOptions | None = None,
                               cleaner: LearnedCleaner | None = None) -> tuple[np.ndarray, float]:
    """:func:`clean_signature`, and the share of the crop's ink the learned cleaner marks as
    clutter (0.0 where it does not run: no cleaner, the classic method, or a crop without ink):
    the number its gate, ``min_removed_share``, is compared with.
    Fitting the gate needs both, and the cleaner is the costly step, so it runs once."""
    opts = options or CleanOptions()
    if opts.method == "learned" and cleaner is None:
        from .errors import UsageError

        raise UsageError("learned cleaning needs a bundle with a cleaner model")
    flat = flatten_background(to_gray(image))
    ink = binarize(flat)
    remove = np.zeros_like(ink)
    share = 0.0
    if cleaner is not None and opts.method != "classic" and ink.any():
        learned = ink & ~cleaner.keep_mask(flat)
        share = float(learned.sum() / ink.sum())
        gate = cleaner.min_removed_share if opts.min_removed_share is None else opts.min_removed_share
        if learned.sum() >= gate * ink.sum():
            remove |= learned
    if opts.remove_lines and ink.any():
        remove |= line_mask(ink, opts.min_line_span)
    if opts.remove_specks and ink.any():
        remove |= ink & ~remove_specks(ink & ~remove, opts.speck_fraction)
    out = flat.copy()
    out[remove] = 255
    return out, share
