"""Reading images safely: paths, bytes or arrays in; a uint8 BGR or gray array out.

Decoding is done by OpenCV. Before decoding, the header is read to refuse images whose
pixel count exceeds a limit (decompression bombs), and EXIF orientation is applied by
hand because ``cv2.IMREAD_UNCHANGED`` (needed to see alpha and 16-bit data) ignores it.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from .errors import InvalidImageError

__all__ = ["ImageInput", "MAX_PIXELS", "load_image", "read_image_bytes", "image_size_from_header"]

log = logging.getLogger(__name__)

#: Anything a sigedge function accepts as an image.
ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

#: Default limit on width * height (about a 600 dpi A3 scan is 70 Mpx).
MAX_PIXELS = 80_000_000
#: Refuse files larger than this before reading them into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024


def read_image_bytes(path: Union[str, os.PathLike]) -> bytes:
    """Read a file's bytes with errors phrased for a person."""
    p = Path(os.fsdecode(path))
    name = _printable(p)
    if not p.exists():
        raise InvalidImageError(f"{name}: no such file")
    if p.is_dir():
        raise InvalidImageError(f"{name}: is a directory, not an image")
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidImageError(f"{name}: file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        return p.read_bytes()
    except OSError as exc:
        raise InvalidImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc


def _printable(p: Path) -> str:
    # File names need not be UTF-8; keep the message printable on any terminal.
    return os.fsencode(p).decode("utf-8", "backslashreplace")


def load_image(source: ImageInput, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load an image as uint8, either (H, W) gray or (H, W, 3) BGR.

    Accepts a path, encoded bytes (PNG, JPEG, TIFF 8/16-bit, BMP...) or a numpy array.
    Alpha is flattened on white, 16-bit data is scaled to 8 bits, EXIF orientation is
    applied. Raises :class:`InvalidImageError` with a one-line reason otherwise.
    """
    if isinstance(source, np.ndarray):
        return _normalise_array(source, "array")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "image bytes"
    elif isinstance(source, (str, os.PathLike)):
        data, name = read_image_bytes(source), _printable(Path(os.fsdecode(source)))
    else:
        raise InvalidImageError(f"unsupported image input of type {type(source).__name__}")
    return _decode(data, name, max_pixels)


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    if len(data) == 0:
        raise InvalidImageError(f"{name}: empty file")
    size = image_size_from_header(data)
    if size is None and not _looks_like_image(data):
        raise InvalidImageError(f"{name}: not a recognised image format")
    if size is not None:
        w, h = size
        if w <= 0 or h <= 0:
            raise InvalidImageError(f"{name}: header gives an empty image ({w}x{h})")
        if w * h > max_pixels:
            raise InvalidImageError(f"{name}: {w}x{h} pixels exceeds the limit of {max_pixels}")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InvalidImageError(f"{name}: cannot decode ({str(exc).strip().splitlines()[-1]})") from exc
    if img is None:
        raise InvalidImageError(f"{name}: cannot decode (truncated or corrupt image)")
    if img.size == 0:
        raise InvalidImageError(f"{name}: decoded to an empty image")
    img = _normalise_array(img, name)
    orientation = exif_orientation(data)
    if orientation not in (None, 1):
        img = _apply_orientation(img, orientation)
    return img


def _normalise_array(img: np.ndarray, name: str) -> np.ndarray:
    if img.ndim not in (2, 3) or img.size == 0:
        raise InvalidImageError(f"{name}: expected a 2-D gray or 3-D colour image, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        hi = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        img = np.clip(np.nan_to_num(img) * (255.0 / hi), 0, 255).astype(np.uint8)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        raise InvalidImageError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 4:
            img = _flatten_alpha(img)
        elif channels == 2:  # gray + alpha
            img = _flatten_alpha(cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR), img[:, :, 1])
        elif channels != 3:
            raise InvalidImageError(f"{name}: unsupported channel count {channels}")
    return np.ascontiguousarray(img)


def _flatten_alpha(bgra: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Composite on white: transparent scans are signatures on nothing, i.e. on paper."""
    if alpha is None:
        alpha = bgra[:, :, 3]
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    rgb = bgra[:, :, :3].astype(np.float32)
    return (rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


def _looks_like_image(data: bytes) -> bool:
    magic = (b"\x89PNG", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"RIFF", b"P5", b"P6", b"P4", b"P2", b"P3")
    return data.startswith(magic)


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, BMP, GIF or TIFF header, or None."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(int(w)), abs(int(h))
        if data[:4] == b"GIF8" and len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + seg_len
    return None


def _tiff_ifd(data: bytes, offset: int, endian: str) -> dict[int, tuple[int, int, bytes]]:
    """Entries of one TIFF IFD as tag -> (type, count, 4-byte value field)."""
    (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
    entries = {}
    for k in range(count):
        base = offset + 2 + 12 * k
        tag, typ, cnt = struct.unpack(endian + "HHI", data[base : base + 8])
        entries[tag] = (typ, cnt, data[base + 8 : base + 12])
    return entries


def _tiff_value(entry: tuple[int, int, bytes], endian: str) -> int:
    typ, _cnt, raw = entry
    if typ == 3:  # SHORT
        return struct.unpack(endian + "H", raw[:2])[0]
    return struct.unpack(endian + "I", raw)[0]


def _tiff_size(data: bytes, base: int = 0) -> tuple[int, int] | None:
    endian = "<" if data[base : base + 2] == b"II" else ">"
    (offset,) = struct.unpack(endian + "I", data[base + 4 : base + 8])
    entries = _tiff_ifd(data, base + offset, endian)
    if 256 in entries and 257 in entries:
        return _tiff_value(entries[256], endian), _tiff_value(entries[257], endian)
    return None


def exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation tag (1..8) of a JPEG or TIFF, or None when absent."""
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _orientation_in_tiff(data, 0)
        if data[:2] != b"\xff\xd8":
            return None
        i = 2
        while i + 4 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
                return _orientation_in_tiff(data, i + 10)
            if marker == 0xDA:  # start of scan: no more metadata
                return None
            i += 2 + seg_len
    except (struct.error, IndexError):
        return None
    return None


def _orientation_in_tiff(data: bytes, base: int) -> int | None:
    endian = "<" if data[base : base + 2] == b"II" else ">"
    (offset,) = struct.unpack(endian + "I", data[base + 4 : base + 8])
    entries = _tiff_ifd(data, base + offset, endian)
    if 0x0112 in entries:
        value = _tiff_value(entries[0x0112], endian)
        return value if 1 <= value <= 8 else None
    return None


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    ops = {
        2: lambda a: cv2.flip(a, 1),
        3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
        4: lambda a: cv2.flip(a, 0),
        5: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE), 1),
        6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
        7: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE), 1),
        8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    log.debug("applying EXIF orientation %d", orientation)
    return np.ascontiguousarray(ops[orientation](img))
