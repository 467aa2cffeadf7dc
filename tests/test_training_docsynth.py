"""Synthetic document pages: boxes land on the pasted ink, styles are selectable and fixed by seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.docsynth import PAGE_STYLES, PageSynth, SignaturePool


def _pool(n: int = 6) -> SignaturePool:
    """Scribbles standing in for real signatures (ink high on black, like the pool's inks)."""
    rng = np.random.default_rng(0)
    inks = []
    for _ in range(n):
        ink = np.zeros((60, 180), np.uint8)
        pts = np.cumsum(rng.normal(0, 6, (40, 2)), axis=0) + (90, 30)
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            cv2.line(ink, (int(x0) % 180, int(y0) % 60), (int(x1) % 180, int(y1) % 60), 255, 2)
        inks.append(ink)
    return SignaturePool(inks)


def _pages(style: int, seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    synth = PageSynth(_pool(), seed=seed, style=style)
    return [synth.page(320, p_empty=0.0) for _ in range(n)]


@pytest.mark.parametrize("style", PAGE_STYLES)
def test_pages_are_seeded_and_boxes_cover_dark_ink(style):
    a, b = _pages(style, 3, 4), _pages(style, 3, 4)
    for (pa, ba), (pb, bb) in zip(a, b):
        assert np.array_equal(pa, pb) and np.array_equal(ba, bb)
        assert pa.shape == (320, 320) and pa.dtype == np.uint8
        for x0, y0, x1, y1 in ba:
            assert 0 <= x0 < x1 <= 321 and 0 <= y0 < y1 <= 321
            region = pa[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            assert region.min() < 150  # the box holds ink, not blank paper


def test_style_2_has_multi_signatory_rows():
    counts = [len(b) for _, b in _pages(2, 1, 40)]
    assert max(counts) >= 3  # rows of 2-4 signers, beside ordinary signature blocks


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="page style"):
        PageSynth(None, style=99)
