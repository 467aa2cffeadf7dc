import cv2
import numpy as np
import pytest

from sigedge.errors import NoSignatureError
from sigedge.normalize import NormalizeOptions, deskew, fit_to_canvas, normalize_signature, to_gray
from sigedge.synth import synthetic_signature

OPTS = NormalizeOptions(height=64, width=128)


def test_canvas_shape_range_and_centring():
    out = normalize_signature(synthetic_signature(3, 0), OPTS)
    c = out.canvas
    assert c.shape == (64, 128) and c.dtype == np.float32
    assert 0.0 <= c.min() and c.max() <= 1.0 and c.max() > 0.5  # thin strokes dim when shrunk
    ys, xs = np.nonzero(c > 0.1)
    assert abs((xs.min() + xs.max()) / 2 - 64) <= 3 and abs((ys.min() + ys.max()) / 2 - 32) <= 3


def test_invariant_to_ink_colour_background_and_size():
    base = normalize_signature(synthetic_signature(3, 0), OPTS).canvas
    blue = synthetic_signature(3, 0, ink=(160, 60, 20))
    shaded = blue.astype(np.float32) * np.linspace(0.75, 1.0, blue.shape[1])[None, :, None]
    shaded = np.clip(shaded - 30, 0, 255).astype(np.uint8)  # gray, unevenly lit paper
    big = cv2.resize(shaded, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    other = normalize_signature(big, OPTS).canvas
    inter = np.logical_and(base > 0.2, other > 0.2).sum()
    union = np.logical_or(base > 0.2, other > 0.2).sum()
    assert inter / union > 0.5


def test_blank_and_flat_images_have_no_signature():
    for img in (np.full((100, 200), 255, np.uint8), np.zeros((100, 200), np.uint8),
                np.random.default_rng(0).integers(240, 256, (100, 200)).astype(np.uint8)):
        with pytest.raises(NoSignatureError):
            normalize_signature(img, OPTS)


def test_tiny_image_has_no_signature():
    with pytest.raises(NoSignatureError, match="too small"):
        normalize_signature(np.zeros((1, 1), np.uint8), OPTS)


def test_deskew_levels_a_rotated_line():
    img = np.zeros((200, 200), np.uint8)
    cv2.line(img, (20, 140), (180, 60), 255, 3)  # about -27 degrees
    out, angle = deskew(img)
    assert abs(abs(angle) - 26.6) < 2
    assert out.shape[1] > 2.5 * out.shape[0]


def test_fit_keeps_aspect_ratio():
    ink = np.full((10, 100), 255, np.uint8)
    c = fit_to_canvas(ink, 64, 128, margin=0)
    ys, xs = np.nonzero(c)
    assert xs.max() - xs.min() + 1 == 128 and 12 <= ys.max() - ys.min() + 1 <= 14


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_gray_is_the_darkest_channel(channels):
    image = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    gray = to_gray(image)
    assert gray.dtype == np.uint8 and np.array_equal(gray, image.min(axis=2))
    assert to_gray(gray) is gray


def test_ink_strips_cut_the_ink_box_into_overlapping_strips():
    from sigedge.normalize import crop_to_ink, find_ink, ink_strips

    img = np.full((60, 400), 255, np.uint8)
    cv2.line(img, (100, 30), (300, 30), 0, 3)
    x0, _, x1, _ = crop_to_ink(find_ink(img, NormalizeOptions())[1])
    assert abs(x0 - 100) <= 3 and abs(x1 - 300) <= 3
    cut = round(0.6 * (x1 - x0))
    left, right = ink_strips(img, 2, 0.6)  # 60 % of the ink box each, from its left and its right end
    np.testing.assert_array_equal(left, img[:, x0:x0 + cut])
    np.testing.assert_array_equal(right, img[:, x1 - cut:x1])
    assert [s.shape[1] for s in ink_strips(img, 3, 0.5)] == [round(0.5 * (x1 - x0))] * 3
    dots = np.full((60, 400), 255, np.uint8)
    cv2.circle(dots, (20, 30), 5, 0, -1)
    cv2.circle(dots, (380, 30), 5, 0, -1)
    middle = ink_strips(dots, 3, 0.2)[1]  # the gap between two dots holds no ink: the whole stands in
    assert middle.shape == dots.shape
    with pytest.raises(NoSignatureError):
        ink_strips(np.full((60, 400), 255, np.uint8), 2, 0.6)
