"""Hostile (and valid-but-unusual) image inputs, generated from code into a folder.

>>> from tests.hostile import make_hostile_corpus
>>> for case in make_hostile_corpus(tmp_path):
...     case.name, case.path, case.exit_code     # 0: must work, 3: InvalidImageError, 4: NoSignatureError

Every case documents what sigedge must do with it: refuse with a one-line error and the
exit code of :mod:`sigedge.errors` (3 unreadable image, 4 no signature), or, for unusual
but valid formats carrying a drawn signature, accept it. Nothing is downloaded; Pillow
is used for the formats OpenCV cannot write (CMYK JPEG, palette PNG, multi-page TIFF)
and those cases are skipped, with the reason, when it is missing.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["HostileCase", "make_hostile_corpus", "draw_signature", "png_claiming_size"]

OK, INVALID, NO_SIGNATURE = 0, 3, 4


@dataclass(frozen=True)
class HostileCase:
    name: str
    path: str  # str, possibly with surrogate escapes (non-UTF-8 file names): pass it as is
    exit_code: int  # 0 = must be accepted, 3 = InvalidImageError, 4 = NoSignatureError
    skip: str | None = None  # why the case could not be made here

    @property
    def raw_path(self) -> bytes:
        """The file name as the bytes the file system holds."""
        return os.fsencode(self.path)


def draw_signature(writer: int, sample: int = 0, size: tuple[int, int] = (160, 400), ink: int = 0,
                   background: int = 255) -> np.ndarray:
    """uint8 gray signature-like strokes: each ``writer`` a distinct pattern, each ``sample``
    the same pattern with small jitter (as one person's signatures vary)."""
    h, w = size
    rng = np.random.default_rng(100_003 + int(writer))
    srng = np.random.default_rng((int(writer), int(sample), 17))
    img = np.full((h, w), background, np.uint8)
    shift = srng.normal(0, 0.01, 2)
    for _ in range(int(rng.integers(3, 6))):
        k = int(rng.integers(5, 9))
        pts = np.stack([rng.uniform(0.08, 0.92, k), rng.uniform(0.15, 0.85, k)], axis=1)
        pts = pts + srng.normal(0, 0.006, pts.shape) + shift
        t = np.linspace(0, k - 1, 30 * k)
        curve = np.stack([np.interp(t, np.arange(k), pts[:, 0]) * w, np.interp(t, np.arange(k), pts[:, 1]) * h], 1)
        cv2.polylines(img, [np.round(curve * 4).astype(np.int32)], False, int(ink), 2, cv2.LINE_AA, shift=2)
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming_size(width: int, height: int) -> bytes:
    """A small, well-formed PNG header whose IHDR claims ``width`` x ``height`` (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\xff" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok, ext
    return buf.tobytes()


def make_hostile_corpus(folder: str | os.PathLike, writer: int = 901) -> list[HostileCase]:
    """Write the corpus into ``folder`` (created) and describe each case."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    sig = draw_signature(writer, 0)
    cases: list[HostileCase] = []

    def put(name: str, filename: str, data: bytes, code: int) -> None:
        (d / filename).write_bytes(data)
        cases.append(HostileCase(name, str(d / filename), code))

    png = _encode(".png", sig)
    jpg = _encode(".jpg", cv2.cvtColor(sig, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    put("zero_bytes", "empty.png", b"", INVALID)
    put("text_file", "notes.png", "This is not an image.\nJust some text, ünïcödé.\n".encode("utf-8"), INVALID)
    put("truncated_png", "truncated.png", png[: len(png) // 2], INVALID)
    put("truncated_jpeg", "truncated.jpg", jpg[: len(jpg) // 2], INVALID)
    put("png_claiming_100000x100000", "bomb.png", png_claiming_size(100_000, 100_000), INVALID)
    put("one_pixel", "one_pixel.png", _encode(".png", np.zeros((1, 1), np.uint8)), NO_SIGNATURE)
    put("all_white", "white.png", _encode(".png", np.full((200, 500), 255, np.uint8)), NO_SIGNATURE)
    put("all_black", "black.png", _encode(".png", np.zeros((200, 500), np.uint8)), NO_SIGNATURE)
    put("png_16bit_signature", "sig16.png", _encode(".png", sig.astype(np.uint16) * 257), OK)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the dev extra
        reason = "Pillow is not installed (pip install pillow)"
        for name in ("cmyk_jpeg_signature", "palette_png_signature", "multipage_tiff_signature"):
            cases.append(HostileCase(name, "", OK, skip=reason))
    else:
        rgb = Image.fromarray(cv2.cvtColor(sig, cv2.COLOR_GRAY2RGB))
        rgb.convert("CMYK").save(d / "cmyk.jpg", "JPEG", quality=92)
        cases.append(HostileCase("cmyk_jpeg_signature", str(d / "cmyk.jpg"), OK))
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "palette.png", "PNG")
        cases.append(HostileCase("palette_png_signature", str(d / "palette.png"), OK))
        second = Image.fromarray(draw_signature(writer + 1, 0))
        Image.fromarray(sig).save(d / "pages.tif", "TIFF", save_all=True, append_images=[second])
        cases.append(HostileCase("multipage_tiff_signature", str(d / "pages.tif"), OK))
    (d / "a_directory.png").mkdir(exist_ok=True)
    cases.append(HostileCase("directory", str(d / "a_directory.png"), INVALID))
    cases.append(HostileCase("missing_path", str(d / "does-not-exist.png"), INVALID))
    try:
        bad = os.path.join(os.fsencode(d), b"caf\xe9-\xff\xfe.png")
        good = os.path.join(os.fsencode(d), b"sig-\xe9\xff.png")
        with open(bad, "wb") as f:
            f.write(b"\x00\x01 not an image")
        with open(good, "wb") as f:
            f.write(png)
        cases.append(HostileCase("non_utf8_name_junk", os.fsdecode(bad), INVALID))
        cases.append(HostileCase("non_utf8_name_signature", os.fsdecode(good), OK))
    except (OSError, UnicodeError) as exc:  # e.g. a file system that insists on UTF-8 names
        reason = f"this file system refuses non-UTF-8 names ({exc})"
        cases.append(HostileCase("non_utf8_name_junk", "", INVALID, skip=reason))
        cases.append(HostileCase("non_utf8_name_signature", "", OK, skip=reason))
    return cases
