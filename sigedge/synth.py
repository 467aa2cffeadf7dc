"""Procedural signatures: a reproducible stand-in for real ones in tests, benchmarks and demos.

A *writer* is a seeded random pen trajectory (a few strokes of loops and waves); each
*sample* of that writer re-draws the trajectory with small jitter in shape, slant, scale,
stroke width and position, the way one person's signatures vary. Different writer seeds
give clearly different signatures. No real data is used.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["writer_trajectory", "catmull_rom", "render_signature", "synthetic_signature"]


def writer_trajectory(writer: int, n_strokes: int | None = None) -> list[np.ndarray]:
    """Control points (K, 2) in a unit box for each stroke of writer ``writer``."""
    rng = np.random.default_rng(10_000 + writer)
    n_strokes = n_strokes or int(rng.integers(1, 4))
    strokes = []
    x = 0.05
    for _ in range(n_strokes):
        k = int(rng.integers(6, 14))
        xs = x + np.cumsum(rng.uniform(0.02, 0.12, k))
        ys = 0.5 + 0.3 * np.sin(np.cumsum(rng.uniform(0.6, 2.2, k))) + rng.normal(0, 0.08, k)
        strokes.append(np.stack([xs, ys], axis=1))
        x = float(xs[-1]) + rng.uniform(0.0, 0.08)
    span = max(float(s[:, 0].max()) for s in strokes)
    return [np.stack([s[:, 0] / span * 0.9 + 0.05, s[:, 1]], axis=1) for s in strokes]


def catmull_rom(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """Catmull-Rom interpolation through the control points."""
    p = np.vstack([points[:1], points, points[-1:]])
    out = []
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(points[-1:])
    return np.vstack(out)


def render_signature(strokes: list[np.ndarray], size: tuple[int, int] = (160, 400), thickness: int = 2,
                     ink: tuple[int, int, int] = (20, 20, 20), background: int = 255) -> np.ndarray:
    """Draw strokes (unit-box coordinates) on a BGR canvas of ``size`` = (height, width)."""
    h, w = size
    img = np.full((h, w, 3), background, np.uint8)
    for s in strokes:
        pts = catmull_rom(s) * np.array([w, h])
        cv2.polylines(img, [np.round(pts * 4).astype(np.int32)], False, ink, thickness, cv2.LINE_AA, shift=2)
    return img


def synthetic_signature(writer: int, sample: int = 0, size: tuple[int, int] = (160, 400), jitter: float = 1.0,
                        ink: tuple[int, int, int] = (20, 20, 20)) -> np.ndarray:
    """Sample ``sample`` of synthetic writer ``writer`` as a BGR uint8 image."""
    rng = np.random.default_rng((writer, sample))
    base = writer_trajectory(writer)
    slant = rng.normal(0, 0.08) * jitter
    scale = np.exp(rng.normal(0, 0.05) * jitter)
    strokes = []
    for s in base:
        s = s + rng.normal(0, 0.012 * jitter, s.shape)
        x, y = s[:, 0], s[:, 1]
        x = 0.5 + (x - 0.5 + slant * (0.5 - y)) * scale
        y = 0.5 + (y - 0.5) * scale
        strokes.append(np.stack([x, y], axis=1))
    thickness = int(rng.integers(1, 4)) if jitter else 2
    return render_signature(strokes, size, thickness, ink)
