"""Pose augmentation: the rotation range is what ``--max-rotation`` says, and nothing else turns lines."""

from __future__ import annotations

import cv2
import numpy as np

from training.augment import (DEFAULT_MAX_ROTATION, INK_LEVEL, PARTIAL_VIEW_BAND, augment, leave_out_band,
                              random_affine)


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


def _ink_columns(img: np.ndarray) -> np.ndarray:
    return (img > INK_LEVEL).any(axis=0)


def test_leave_out_band_blanks_one_band_inside_the_ink():
    img = _horizontal_line()  # ink from x=100 to x=300 (plus the pen's round caps)
    for seed in range(20):
        out = leave_out_band(img, np.random.default_rng(seed))
        blank = np.flatnonzero(_ink_columns(img) & ~_ink_columns(out))
        assert blank.size, "the band must remove writing"
        assert np.all(np.diff(blank) == 1), "one contiguous band"
        width = _ink_columns(img).sum()
        lo, hi = PARTIAL_VIEW_BAND
        assert lo * width - 2 <= blank.size <= hi * width + 2
        kept = np.ones(img.shape[1], bool)
        kept[blank] = False
        assert np.array_equal(out[:, kept], img[:, kept]), "nothing outside the band changes"


def test_partial_view_leaves_a_gap_in_the_fitted_canvas_only_when_asked():
    def gaps(partial_view: float) -> int:
        n = 0
        for seed in range(10):
            out = augment(_horizontal_line(), np.random.default_rng(seed), (64, 128), max_rotation=0.0,
                          partial_view=partial_view)
            cols = np.flatnonzero(_ink_columns(out))
            n += int(np.any(np.diff(cols) > 1))  # a column without ink between the ends of the line
        return n

    assert gaps(0.0) == 0
    assert gaps(1.0) >= 8  # a band at the very end of the line is cropped away instead of leaving a gap


def test_leave_out_band_keeps_ink_too_narrow_to_split():
    img = np.zeros((20, 40), np.uint8)
    img[5:15, 17] = 255  # one column of ink
    assert np.array_equal(leave_out_band(img, np.random.default_rng(0)), img)


def test_partial_view_off_draws_no_random_number():
    # the shipped recipe's augmentation stream must not change because the option exists
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    out_a = augment(_horizontal_line(), a, (64, 128))
    out_b = augment(_horizontal_line(), b, (64, 128), partial_view=0.0)
    assert np.array_equal(out_a, out_b) and a.bit_generator.state == b.bit_generator.state
    c = np.random.default_rng(5)
    augment(_horizontal_line(), c, (64, 128), partial_view=0.5)
    assert c.bit_generator.state != a.bit_generator.state
