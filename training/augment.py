"""Signature augmentation on normalised ink canvases (uint8, ink high, paper 0).

Works on the cached high-resolution canvases and ends with the runtime's own crop and
fit, so the network always sees canvases laid out exactly as at inference time.
Variation modelled: pose (rotation, anisotropic scale, shear), handwriting wobble
(elastic), pen (stroke width, pressure, binary tablet ink), scan (blur, noise), and on
request partial views (a vertical band of the signature left out).
"""

from __future__ import annotations

import cv2
import numpy as np

from sigedge.normalize import crop_to_ink, fit_to_canvas


#: Canvas level above which a pixel counts as ink when cropping (below it: paper and faint noise).
INK_LEVEL = 20

#: Rotation range (degrees, either way) of the shipped recipe's pose augmentation.
DEFAULT_MAX_ROTATION = 8.0


def random_affine(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                  max_rotation: float = DEFAULT_MAX_ROTATION) -> np.ndarray:
    h, w = img.shape
    angle = rng.uniform(-max_rotation, max_rotation) * strength
    sx = np.exp(rng.uniform(-0.15, 0.15) * strength)
    sy = np.exp(rng.uniform(-0.15, 0.15) * strength)
    shear = rng.uniform(-0.25, 0.25) * strength
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    a = np.array([[sx, shear * sx, 0], [0, sy, 0]], dtype=np.float64)
    # compose: centre -> scale/shear -> rotate about centre
    c = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], dtype=np.float64)
    ci = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]], dtype=np.float64)
    m = np.vstack([rot, [0, 0, 1]]) @ ci @ np.vstack([a, [0, 0, 1]]) @ c
    return cv2.warpAffine(img, m[:2], (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def elastic(img: np.ndarray, rng: np.random.Generator, alpha: float = 3.0, grid: int = 6) -> np.ndarray:
    """Smooth random displacement: a coarse random grid upsampled (cheap, no big blur)."""
    h, w = img.shape
    gh, gw = grid, grid * max(1, w // h)
    dx = cv2.resize(rng.normal(0, alpha, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, alpha, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, xs + dx, ys + dy, interpolation=cv2.INTER_LINEAR, borderValue=0)


def pen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.25:
        k = int(rng.integers(2, 4))
        img = cv2.dilate(img, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    elif r < 0.4:
        img = cv2.erode(img, np.ones((2, 2), np.uint8))
    r = rng.random()
    f = img.astype(np.float32) / 255.0
    if r < 0.2:  # tablet / binarised ink: uniform strokes
        f = (f > 0.3).astype(np.float32)
    elif r < 0.6:  # pen pressure varies smoothly along the signature
        h, w = img.shape
        field = cv2.resize(rng.uniform(0.55, 1.0, (3, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        f = f * np.clip(field, 0.4, 1.0)
    f = np.power(np.clip(f, 0, 1), rng.uniform(0.7, 1.4))
    return (f * 255).astype(np.uint8)


def scan(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    return img


#: Width of the band a partial view leaves out, as a share of the ink's width.
PARTIAL_VIEW_BAND = (0.1, 0.3)


def leave_out_band(img: np.ndarray, rng: np.random.Generator, band: tuple[float, float] = PARTIAL_VIEW_BAND) -> np.ndarray:
    """The signature with one full-height band of its ink's width blanked (a partial view).

    The band is placed inside the ink's horizontal extent, so it always removes writing, and
    at most ``band[1]`` of it, so most of the signature stays; the caller re-crops to the ink
    as the runtime would for a crop that cut a signature short.
    """
    box = crop_to_ink(img > INK_LEVEL)
    if box is None or box[2] - box[0] < 2:  # no ink, or too little to leave part of it out
        return img
    x0, _, x1, _ = box
    width = max(1, int(round((x1 - x0) * rng.uniform(*band))))
    start = x0 + int(rng.integers(0, max(1, x1 - x0 - width + 1)))
    out = img.copy()
    out[:, start:start + width] = 0
    return out


def augment(img: np.ndarray, rng: np.random.Generator, out_hw: tuple[int, int], margin: float = 0.04,
            max_rotation: float = DEFAULT_MAX_ROTATION, partial_view: float = 0.0) -> np.ndarray:
    """One augmented model canvas (uint8, out_hw) from a cached high-res canvas.

    ``partial_view`` is the chance of leaving out a band of the signature (`leave_out_band`);
    at 0 no random number is drawn for it, so the shipped recipe's stream is unchanged.
    """
    x = random_affine(img, rng, max_rotation=max_rotation)
    if rng.random() < 0.4:
        x = elastic(x, rng, alpha=rng.uniform(1.0, 3.0))
    x = pen(x, rng)
    x = scan(x, rng)
    if partial_view and rng.random() < partial_view:
        x = leave_out_band(x, rng)
    return refit(x, out_hw, margin)


def refit(img: np.ndarray, out_hw: tuple[int, int], margin: float = 0.04) -> np.ndarray:
    """Crop to the ink and fit on the model canvas, as the runtime does."""
    box = crop_to_ink(img > INK_LEVEL)
    if box is None:
        return np.zeros(out_hw, np.uint8)
    x0, y0, x1, y1 = box
    return fit_to_canvas(img[y0:y1, x0:x1], out_hw[0], out_hw[1], margin)
