"""Pose augmentation: the rotation range is what ``--max-rotation`` says, and nothing else turns lines."""

from __future__ import annotations

import cv2
import numpy as np

from training.augment import DEFAULT_MAX_ROTATION, augment, random_affine


def _line_angle(img: np.ndarray) -> float:
    """Angle (degrees) of the principal axis of the ink."""
    ys, xs = np.nonzero(img > 60)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    pts -= pts.mean(0)
    _, vecs = np.linalg.eigh(pts.T @ pts)
    vx, vy = vecs[:, -1]
    a = np.degrees(np.arctan2(vy, vx))
    return float((a + 90) % 180 - 90)


def _horizontal_line() -> np.ndarray:
    img = np.zeros((200, 400), np.uint8)
    cv2.line(img, (100, 100), (300, 100), 255, 3)
    return img


def test_without_rotation_a_horizontal_line_stays_horizontal():
    # scale and shear keep horizontal lines horizontal; only the rotation turns them
    rng = np.random.default_rng(0)
    angles = [_line_angle(random_affine(_horizontal_line(), rng, max_rotation=0.0)) for _ in range(20)]
    assert max(abs(a) for a in angles) < 1.0


def test_rotation_range_follows_max_rotation():
    def spread(max_rotation: float) -> float:
        rng = np.random.default_rng(1)
        return max(abs(_line_angle(random_affine(_horizontal_line(), rng, max_rotation=max_rotation)))
                   for _ in range(60))

    narrow, wide = spread(DEFAULT_MAX_ROTATION), spread(15.0)
    assert narrow <= DEFAULT_MAX_ROTATION + 1.0
    assert 12.0 < wide <= 16.0


def test_augment_returns_a_model_canvas():
    out = augment(_horizontal_line(), np.random.default_rng(2), (64, 128), max_rotation=15.0)
    assert out.shape == (64, 128) and out.dtype == np.uint8 and out.max() > 0
