"""Signature normalisation: any scan in, a centred ink canvas of the model's size out.

The steps (each a public function, so they can be tested and reused):

1. ``to_gray``            colour -> gray (alpha was already flattened by :func:`load_image`)
2. ``flatten_background`` divide by a smooth background estimate: removes shading,
                          coloured or textured paper and uneven scanner light
3. ``binarize``           Otsu (default) or adaptive threshold -> ink mask
4. ``remove_specks``      drop connected components too small to be pen strokes
5. ``crop_to_ink``        tight box around the ink, with a small margin
6. ``deskew``             optional: rotate so the signature's main axis is horizontal
7. ``fit_to_canvas``      resize keeping aspect ratio, centre on the model's canvas

The canvas is float32 in [0, 1] with ink high and paper 0. Ink darkness is kept (not only
a binary mask) but stretched per image, so a light blue pen and a black marker look alike.
Training uses exactly this code, so the model sees at run time what it saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from .errors import NoSignatureError

__all__ = [
    "NormalizeOptions",
    "NormalizedSignature",
    "normalize_signature",
    "ink_strips",
    "to_gray",
    "flatten_background",
    "binarize",
    "remove_specks",
    "crop_to_ink",
    "deskew",
    "fit_to_canvas",
    "ink_image",
    "find_ink",
    "rotate_image",
]


@dataclass(frozen=True)
class NormalizeOptions:
    """How a cropped signature is turned into the model's input canvas."""

    height: int = 128
    width: int = 256
    threshold: Literal["otsu", "adaptive"] = "otsu"
    deskew: bool = False
    #: Components smaller than this fraction of the largest one are dropped as specks.
    speck_fraction: float = 0.01
    #: Components smaller than this many pixels are always dropped.
    min_speck_pixels: int = 6
    #: Margin kept around the ink, as a fraction of the canvas side.
    margin: float = 0.04
    #: Pages whose ink covers less than this many pixels hold no signature.
    min_ink_pixels: int = 30
    #: Minimal gray-level contrast between paper and ink (0..255).
    min_contrast: float = 25.0


@dataclass(frozen=True)
class NormalizedSignature:
    """The model input for one signature plus what is needed to explain it."""

    canvas: np.ndarray  # float32 (H, W) in [0, 1], ink high
    ink_box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the ink in the input image
    angle: float  # degrees the crop was rotated by deskew (0 when off)
    #: bool (y1 - y0, x1 - x0): the ink found in the input image, cropped to ``ink_box`` (before
    #: any deskew; a copy, so the full-size mask is not kept alive); the contour hinge is traced
    #: from it (:func:`sigedge.hinge.ink_hinge`)
    ink_mask: np.ndarray | None = field(default=None, repr=False, compare=False)


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray from gray or BGR uint8.

    Uses the darkest channel rather than luminance: coloured ink (blue, red) on white
    paper is darker in some channel than paper is in any, which keeps light pens visible.
    """
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[..., 0].copy()
    # three element-wise minima, not image.min(axis=2): numpy reduces a length-3 last axis
    # about 10x slower (15 ms against 1.3 ms on a 640x640 page here), and a page is on the
    # detector's critical path
    out = np.minimum(image[..., 0], image[..., 1])
    for c in range(2, image.shape[2]):
        np.minimum(out, image[..., c], out=out)
    return out


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Divide out a smooth background estimate; paper becomes ~255 whatever its shade."""
    h, w = gray.shape
    # Estimate on a small copy: the background is smooth, and this keeps it cheap on pages.
    scale = min(1.0, 256.0 / max(h, w))
    small = cv2.resize(gray, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    k = max(3, (int(min(small.shape) * 0.15) | 1))
    # Closing removes dark strokes (thinner than k) and keeps the lighter paper level.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    bg_small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    bg_small = cv2.blur(bg_small, (k, k))
    bg = cv2.resize(bg_small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    flat = gray.astype(np.float32) / np.maximum(bg, 1.0) * 255.0
    return np.clip(flat, 0, 255).astype(np.uint8)


def binarize(flat: np.ndarray, method: str = "otsu", min_contrast: float = 25.0) -> np.ndarray:
    """Boolean ink mask (True = ink) of a background-flattened gray image."""
    if method == "adaptive":
        block = max(15, (min(flat.shape) // 8) | 1)
        mask = cv2.adaptiveThreshold(flat, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV, block, 10)
        mask = mask > 0
    elif method == "otsu":
        t, _ = cv2.threshold(flat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # ``<=``, as OpenCV's own split: on a two-level image (a born-digital or tablet
        # signature) Otsu returns the ink level itself, and ``<`` would find no ink at all.
        mask = flat <= t
    else:
        raise ValueError(f"unknown threshold method {method!r}")
    # Otsu always splits something; on a blank page the 'ink' is paper noise. Require the
    # ink to be clearly darker than the paper around it.
    if mask.all():  # a uniform image: nothing is darker than anything else
        return np.zeros_like(mask)
    if mask.any():
        ink_level = float(np.median(flat[mask]))
        paper_level = float(np.median(flat[~mask]))
        if paper_level - ink_level < min_contrast:
            return np.zeros_like(mask)
    return mask


def remove_specks(mask: np.ndarray, fraction: float = 0.01, min_pixels: int = 6) -> np.ndarray:
    """Drop connected components that are tiny next to the largest one (dust, noise)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep_min = max(min_pixels, fraction * float(areas.max()))
    keep = np.zeros(n, dtype=bool)
    keep[1:] = areas >= keep_min
    return keep[labels]


def crop_to_ink(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the ink in the mask, or None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def ink_image(flat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 ink intensity (paper 0), stretched so the darkest ink reaches 255."""
    ink = (255 - flat.astype(np.int16)).clip(0, 255).astype(np.float32)
    ink[~mask] = 0.0
    if mask.any():
        top = float(np.percentile(ink[mask], 90))
        if top > 0:
            ink = np.clip(ink * (255.0 / top), 0, 255)
    return ink.astype(np.uint8)


def deskew(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotate so the ink's principal axis is horizontal; returns (image, angle in degrees)."""
    ys, xs = np.nonzero(ink > 0)
    if len(xs) < 10:
        return ink, 0.0
    coords = np.stack([xs, ys], axis=1).astype(np.float32)
    coords -= coords.mean(axis=0)
    cov = coords.T @ coords / len(coords)
    evals, evecs = np.linalg.eigh(cov)
    vx, vy = evecs[:, int(np.argmax(evals))]
    angle = float(np.degrees(np.arctan2(vy, vx)))
    if angle > 90:
        angle -= 180
    elif angle < -90:
        angle += 180
    if abs(angle) > 45 or abs(angle) < 0.5:
        # Past 45 degrees the main axis is ambiguous (a tall signature); leave it alone.
        return ink, 0.0
    h, w = ink.shape
    diag = int(np.ceil(np.hypot(h, w)))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[0, 2] += (diag - w) / 2
    m[1, 2] += (diag - h) / 2
    rotated = cv2.warpAffine(ink, m, (diag, diag), flags=cv2.INTER_LINEAR, borderValue=0)
    box = crop_to_ink(rotated > 0)
    if box is None:
        return ink, 0.0
    x0, y0, x1, y1 = box
    return rotated[y0:y1, x0:x1], angle


def fit_to_canvas(ink: np.ndarray, height: int, width: int, margin: float = 0.04) -> np.ndarray:
    """Resize keeping aspect ratio to fit (height, width) less a margin; centre it."""
    h, w = ink.shape
    inner_h = max(1, int(round(height * (1 - 2 * margin))))
    inner_w = max(1, int(round(width * (1 - 2 * margin))))
    scale = min(inner_h / h, inner_w / w)
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(ink, (new_w, new_h), interpolation=interp)
    canvas = np.zeros((height, width), dtype=np.uint8)
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas


def rotate_image(image: np.ndarray, angle: float, fill: int = 255) -> np.ndarray:
    """``image`` turned by ``angle`` degrees (counter-clockwise), on a canvas grown to hold all
    of it, the new corners filled with ``fill`` (paper)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * sin + w * cos)), int(round(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    border = (fill,) * (image.shape[2] if image.ndim == 3 else 1)
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=border)


def find_ink(gray: np.ndarray, options: NormalizeOptions) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 on a uint8 gray image: the flattened gray and the ink mask, specks removed
    (what :func:`normalize_signature` and :func:`sigedge.hinge.contour_hinge` start from)."""
    flat = flatten_background(gray)
    mask = binarize(flat, options.threshold, options.min_contrast)
    return flat, remove_specks(mask, options.speck_fraction, options.min_speck_pixels)


def ink_strips(image: np.ndarray, count: int, span: float, options: NormalizeOptions | None = None) -> list[np.ndarray]:
    """The image cut to ``count`` evenly spaced, overlapping vertical strips of its ink box, each
    ``span`` of the box's width, left to right (:class:`sigedge.scoring.StripSpec`); the whole
    image stands in for a strip that holds no ink."""
    _, mask = find_ink(to_gray(image), options or NormalizeOptions())
    box = crop_to_ink(mask)
    if box is None:
        raise NoSignatureError("no ink found to cut into strips")
    x0, _, x1, _ = box
    width = x1 - x0
    cut = max(1, int(round(span * width)))
    out = []
    for i in range(count):
        start = x0 + int(round(i * (width - cut) / max(count - 1, 1)))
        out.append(image[:, start:start + cut] if mask[:, start:start + cut].any() else image)
    return out


def normalize_signature(image: np.ndarray, options: NormalizeOptions | None = None) -> NormalizedSignature:
    """Turn a cropped signature (uint8 gray or BGR) into the model's input canvas.

    Raises :class:`NoSignatureError` when no ink is found (blank or flat image).
    """
    opts = options or NormalizeOptions()
    gray = to_gray(image)
    if min(gray.shape) < 4:
        raise NoSignatureError(f"image is {gray.shape[1]}x{gray.shape[0]} pixels, too small to hold a signature")
    flat, mask = find_ink(gray, opts)
    if int(mask.sum()) < opts.min_ink_pixels:
        raise NoSignatureError("no ink found: the image looks blank")
    box = crop_to_ink(mask)
    assert box is not None  # mask is non-empty here
    x0, y0, x1, y1 = box
    ink = ink_image(flat[y0:y1, x0:x1], mask[y0:y1, x0:x1])
    angle = 0.0
    if opts.deskew:
        ink, angle = deskew(ink)
    canvas = fit_to_canvas(ink, opts.height, opts.width, opts.margin)
    return NormalizedSignature(canvas=canvas.astype(np.float32) / 255.0, ink_box=box, angle=angle,
                               ink_mask=mask[y0:y1, x0:x1].copy())
