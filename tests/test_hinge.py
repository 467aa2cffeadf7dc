"""The contour-hinge descriptor: drawn shapes with known turns, scale, the manifest block."""

import cv2
import numpy as np
import pytest

from sigedge.errors import ModelError, NoSignatureError
from sigedge.hinge import HingeSpec, _thin_dense, contour_hinge, hinge_distances, ink_hinge, thin


def drawn(shape: str, scale: float = 1.0, pen: int = 4) -> np.ndarray:
    """Black strokes on white paper: a ring, or a zigzag of straight strokes."""
    size = int(round(200 * scale))
    img = np.full((size, 2 * size), 255, np.uint8)
    thickness = max(1, int(round(pen * scale)))
    if shape == "ring":
        cv2.ellipse(img, (size, size // 2), (int(80 * scale), int(70 * scale)), 0, 0, 360, 0, thickness)
    else:
        xs = np.linspace(20 * scale, 2 * size - 20 * scale, 9)
        pts = np.array([[x, (30 if i % 2 else 170) * scale] for i, x in enumerate(xs)], np.int32)
        cv2.polylines(img, [pts], False, 0, thickness)
    return img


def test_each_fragment_length_gives_one_histogram_summing_to_one():
    spec = HingeSpec()
    h = contour_hinge(drawn("ring"), spec)
    assert h.shape == (spec.size,) == (2 * 12 * 12,) and h.dtype == np.float32
    assert np.allclose(h.reshape(2, -1).sum(axis=1), 1.0)


def test_a_ring_turns_smoothly_a_zigzag_does_not():
    ring, zigzag = contour_hinge(drawn("ring")), contour_hinge(drawn("zigzag"))
    spec = HingeSpec()
    # on a smooth curve the two fragments leaving a point point (almost) opposite ways
    bins = spec.bins
    ahead, behind = np.meshgrid(np.arange(bins), np.arange(bins), indexing="ij")
    opposite = (np.abs(((ahead - behind) % bins) - bins // 2) <= 1).ravel()
    short = slice(0, bins * bins)  # the shorter fragments' histogram
    assert ring[short][opposite].sum() > 0.9
    assert hinge_distances(ring, zigzag, spec)[0] > 5 * hinge_distances(ring, contour_hinge(drawn("ring", 1.05)),
                                                                           spec)[0]


def test_the_same_signature_scanned_at_twice_the_resolution_describes_alike():
    spec = HingeSpec()
    other_shape = hinge_distances(contour_hinge(drawn("ring")), contour_hinge(drawn("zigzag")), spec)
    for shape in ("ring", "zigzag"):
        d = hinge_distances(contour_hinge(drawn(shape)), contour_hinge(drawn(shape, 2.0)), spec)
        assert (d < other_shape / 2).all(), (shape, d, other_shape)


def test_thinning_leaves_a_one_pixel_centre_line():
    bar = np.zeros((20, 60), np.uint8)
    bar[7:14, 5:55] = 1
    line = thin(bar)
    assert line.sum() > 30 and (line.sum(axis=0) <= 1).all()  # one pixel a column along the bar
    assert set(np.nonzero(line)[0]) <= {9, 10, 11}  # in the middle of rows 7..13
    assert thin(np.zeros((5, 5), np.uint8)).sum() == 0


def test_the_sparse_thinning_gives_the_whole_image_rule_s_centre_line():
    rng = np.random.default_rng(0)
    masks = [(rng.random(tuple(rng.integers(1, 60, 2))) < rng.random()).astype(np.uint8) for _ in range(60)]
    masks += [cv2.dilate(m, np.ones((3, 3), np.uint8)) for m in masks[:30]]
    masks += [(drawn(s, 0.5, pen) < 128).astype(np.uint8) for s in ("ring", "zigzag") for pen in (2, 9)]
    masks += [np.ones((7, 9), np.uint8), np.zeros((5, 5), np.uint8)]
    for mask in masks:
        expected = _thin_dense(mask)
        got = thin(mask)
        assert got.dtype == np.uint8 and got.shape == mask.shape
        np.testing.assert_array_equal(got, expected)
    assert masks[-4].sum() > 0 and thin(masks[-4]).sum() > 0  # the rule was exercised, not only blanks


def test_the_hinge_from_the_normalisation_s_ink_mask_equals_the_one_found_again():
    from sigedge.normalize import NormalizeOptions, normalize_signature

    for shape in ("ring", "zigzag"):
        img = drawn(shape, 0.7)
        normalized = normalize_signature(img, NormalizeOptions())
        x0, y0, x1, y1 = normalized.ink_box
        assert normalized.ink_mask.shape == (y1 - y0, x1 - x0) and normalized.ink_mask.any()
        np.testing.assert_array_equal(ink_hinge(normalized.ink_mask), contour_hinge(img))
    with pytest.raises(NoSignatureError):
        ink_hinge(np.zeros((10, 10), bool))


def test_distances_are_zero_alike_one_disjoint_and_broadcast():
    spec = HingeSpec(fragments=(4,), bins=2)
    a = np.array([1.0, 0, 0, 0])
    b = np.array([0, 0, 0, 1.0])
    assert hinge_distances(a, a, spec).tolist() == [0.0]
    assert hinge_distances(a, b, spec) == pytest.approx([1.0])
    assert hinge_distances(a[None, None], np.stack([a, b])[None], spec).shape == (1, 2, 1)


def test_a_blank_image_has_no_contours_to_trace():
    with pytest.raises(NoSignatureError):
        contour_hinge(np.full((60, 120), 255, np.uint8))


def test_the_manifest_block_round_trips_and_a_malformed_one_is_a_model_error():
    spec = HingeSpec(height=150, fragments=(3, 6, 9), bins=8, stroke="ink")
    assert HingeSpec.from_manifest(spec.to_manifest()) == spec
    assert HingeSpec.from_manifest(HingeSpec().to_manifest()) == HingeSpec() and HingeSpec().stroke == "skeleton"
    with pytest.raises(ModelError, match="traces the stroke"):
        HingeSpec(stroke="pencil")
    assert HingeSpec.from_manifest(None) is None
    with pytest.raises(ModelError, match="contour hinge is malformed"):
        HingeSpec.from_manifest({"height": 200, "bins": 12})
    with pytest.raises(ModelError, match="at least 16"):
        HingeSpec.from_manifest({"height": 4, "fragments": [4], "bins": 12, "stroke": "skeleton"})


def test_a_flat_stray_line_is_traced_at_a_bounded_size():
    from sigedge.hinge import MAX_ASPECT, _ink_mask
    from sigedge.normalize import NormalizeOptions

    line = np.full((40, 3000), 255, np.uint8)
    line[20:22, 10:2990] = 0  # a rule line 1 490 times longer than it is high
    mask = _ink_mask(line, HingeSpec().height, NormalizeOptions())
    assert mask.shape[1] <= MAX_ASPECT * HingeSpec().height
    assert contour_hinge(line).shape == (HingeSpec().size,)


def test_a_manifest_hinge_must_say_how_the_stroke_is_traced():
    block = HingeSpec().to_manifest()
    del block["stroke"]
    with pytest.raises(ModelError, match="malformed"):
        HingeSpec.from_manifest(block)
