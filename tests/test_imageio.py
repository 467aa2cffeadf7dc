import io

import cv2
import numpy as np
import pytest

from sigedge.errors import InvalidImageError
from sigedge.imageio import exif_orientation, image_size_from_header, load_image
from sigedge.synth import synthetic_signature

SIG = synthetic_signature(1, 0)


def encode(ext, img, params=()):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_formats_decode_to_uint8(ext):
    img = load_image(encode(ext, SIG))
    assert img.dtype == np.uint8 and img.shape[:2] == SIG.shape[:2]


def test_16bit_png_and_tiff_scale_to_8bit():
    img16 = (SIG.astype(np.uint16) * 257)
    for ext in (".png", ".tif"):
        out = load_image(encode(ext, img16))
        assert out.dtype == np.uint8
        assert np.abs(out.astype(int) - SIG.astype(int)).max() <= 1


def test_alpha_is_flattened_on_white():
    bgra = np.zeros((20, 30, 4), np.uint8)  # fully transparent black
    bgra[5:10, 5:10] = (0, 0, 0, 255)  # one opaque black square
    out = load_image(encode(".png", bgra))
    assert out.shape == (20, 30, 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[7, 7].tolist() == [0, 0, 0]


def test_path_and_array_inputs(tmp_path):
    p = tmp_path / "s.png"
    p.write_bytes(encode(".png", SIG))
    assert np.array_equal(load_image(p), load_image(str(p)))
    assert np.array_equal(load_image(SIG), SIG)
    gray = load_image(SIG[:, :, 0].astype(np.float32) / 255.0)
    assert gray.dtype == np.uint8 and gray.ndim == 2


def test_exif_orientation_is_applied():
    PIL = pytest.importorskip("PIL.Image")
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :5] = 255  # a white band on the left
    pil = PIL.fromarray(img)
    exif = PIL.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    assert exif_orientation(data) == 6
    out = load_image(data)
    assert out.shape[:2] == (30, 10)
    assert out[:5].mean() > 200  # the band is now on top


def test_header_size_and_pixel_limit():
    png = encode(".png", SIG)
    assert image_size_from_header(png) == (SIG.shape[1], SIG.shape[0])
    assert image_size_from_header(encode(".jpg", SIG)) == (SIG.shape[1], SIG.shape[0])
    with pytest.raises(InvalidImageError, match="exceeds"):
        load_image(png, max_pixels=1000)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"hello, I am text\n", "not a recognised image"),
    (None, "truncated|cannot decode"),
])
def test_bad_bytes(data, match):
    if data is None:
        data = encode(".png", SIG)[:200]
    with pytest.raises(InvalidImageError, match=match):
        load_image(data)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)
