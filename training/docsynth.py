"""Synthetic document pages with signatures, for training the detector.

A page is laid out like business correspondence or a form: a letterhead or logo,
headings, paragraphs of printed text in several fonts, tables, ruled lines, form boxes,
stamps, handwritten-looking annotations that are *not* signatures (dates, numbers,
initials), and zero to three real signatures composited with ink blending. Then it is
degraded like a scan: slight rotation, blur, noise, JPEG, uneven paper. Returns the page
(uint8 gray, paper light) and the signatures' boxes in its pixels.

Fonts: every TrueType file under the system font folders (Debian's fonts-dejavu and
friends), plus OpenCV's Hershey vector fonts, which need nothing installed. The pages
therefore follow the host's fonts; ``renderer_provenance`` names them for the manifests.
"""

from __future__ import annotations

import glob
import logging
import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sigedge.imageio import load_image
from sigedge.normalize import binarize, crop_to_ink, flatten_background, remove_specks, to_gray

log = logging.getLogger(__name__)

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"))
HERSHEY_PRINT = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                 cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL)
HERSHEY_SCRIPT = (cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
CLOSINGS = ("Sincerely,", "Yours truly,", "Very truly yours,", "Signature", "Signed:", "Approved by",
            "Authorized signature", "Best regards,", "Witness", "Date", "Name (print)")
WORDS = ("the", "of", "and", "to", "in", "a", "is", "that", "for", "be", "by", "with", "on", "as", "this",
         "report", "company", "tobacco", "research", "program", "meeting", "product", "market", "sales",
         "please", "attached", "review", "letter", "agreement", "payment", "account", "budget", "results",
         "department", "committee", "contract", "invoice", "total", "amount", "data", "schedule", "plan")


def font_files() -> list[str]:
    found: list[str] = []
    for d in FONT_DIRS:
        found += glob.glob(f"{d}/**/*.ttf", recursive=True)
    return sorted(f for f in found if "Math" not in f)


def renderer_provenance() -> dict:
    """What generated pages depend on besides the code and the seed: this host's TrueType
    fonts (names and sha256) and the libraries that draw them (Pillow, its FreeType, whether
    its raqm text layout is there, OpenCV). Another font set draws other pages, so exports
    record the export host's beside the thresholds they chose on generated pages. Equal
    records do not prove equal pages (other system libraries), unequal ones explain a change."""
    import hashlib

    from PIL import __version__ as pillow
    from PIL import features

    files = font_files()
    return {"fonts": [Path(f).name for f in files],
            "font_sha256": {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files},
            "pillow": pillow, "freetype": features.version("freetype2"), "raqm": bool(features.check("raqm")),
            "opencv": cv2.__version__}


@dataclass
class SignaturePool:
    """Ink images of real signatures (uint8, 0 = no ink, 255 = full ink), cropped to the ink."""

    inks: list[np.ndarray]

    @classmethod
    def from_paths(cls, paths: list[Path], max_width: int = 480) -> "SignaturePool":
        inks = []
        for p in paths:
            ink = signature_ink(load_image(p), max_width)
            if ink is not None:
                inks.append(ink)
        if not inks:
            raise ValueError("no usable signature images")
        return cls(inks)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, *self.inks)

    @classmethod
    def load(cls, path: Path) -> "SignaturePool":
        with np.load(path) as z:
            return cls([z[k] for k in z.files])


def signature_ink(image: np.ndarray, max_width: int) -> np.ndarray | None:
    """The ink of a cropped signature scan: darkness where the binarised mask is set."""
    flat = flatten_background(to_gray(image))
    mask = remove_specks(binarize(flat))
    bbox = crop_to_ink(mask)
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    ink = np.where(mask[y0:y1, x0:x1], 255 - flat[y0:y1, x0:x1], 0).astype(np.uint8)
    ink = np.maximum(ink, (mask[y0:y1, x0:x1] * 160).astype(np.uint8))  # faint strokes still show
    h, w = ink.shape
    if w > max_width:
        ink = cv2.resize(ink, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    return ink


#: Page styles. 1: the layouts detector v0.1/v0.2 trained on. 2 adds what their validation
#: failures showed real pages have and style 1 lacked: rows of 2-4 signatures side by side
#: (certificates, contracts with several signatories, witnesses) with a handwritten date in
#: some slots, letterheads set in script type, and documents that fill only part of the
#: image (photographed or web-sized, sometimes two side by side).
PAGE_STYLES = (1, 2)
CAPTIONS = ("President", "Secretary", "Witness", "Director", "Treasurer", "Chairman", "Date", "Notary",
            "Signature of applicant", "Authorized officer")


class PageSynth:
    """Draws synthetic pages; one instance per thread (it holds a PIL font cache)."""

    def __init__(self, pool: SignaturePool | None, seed: int = 0, style: int = PAGE_STYLES[-1]):
        if style not in PAGE_STYLES:
            raise ValueError(f"page style must be one of {PAGE_STYLES}, not {style}")
        self.pool = pool
        self.style = style
        self.rng = np.random.default_rng(seed)
        self.fonts = font_files()
        self._font_cache: dict = {}

    # ----------------------------------------------------------------- text drawing
    def _pil_font(self, size: int):
        from PIL import ImageFont

        path = self.fonts[self.rng.integers(len(self.fonts))]
        key = (path, size)
        if key not in self._font_cache:
            self._font_cache[key] = ImageFont.truetype(path, size)
        return self._font_cache[key]

    def _words(self, n: int) -> str:
        r = self.rng
        out = []
        for _ in range(n):
            if r.random() < 0.75:
                w = WORDS[r.integers(len(WORDS))]
            else:
                w = "".join(r.choice(list(string.ascii_lowercase), r.integers(2, 10)))
            if r.random() < 0.1:
                w = w.capitalize()
            if r.random() < 0.05:
                w = str(r.integers(1, 99999))
            out.append(w)
        return " ".join(out)

    def _text(self, page: np.ndarray, xy: tuple[int, int], text: str, size: int, ink: int = 20) -> int:
        """Printed text at ``xy`` (top-left); returns the line height used."""
        r = self.rng
        if self.fonts and r.random() < 0.7:
            from PIL import Image, ImageDraw

            font = self._pil_font(size)
            img = Image.fromarray(page)
            ImageDraw.Draw(img).text(xy, text, fill=int(ink), font=font)
            page[:] = np.asarray(img)
            return int(size * 1.25)
        face = HERSHEY_PRINT[r.integers(len(HERSHEY_PRINT))]
        scale = size / 30.0
        thick = max(1, int(round(size / 14)))
        cv2.putText(page, text, (xy[0], xy[1] + size), face, scale, int(ink), thick, cv2.LINE_AA)
        return int(size * 1.3)

    def _handwriting(self, page: np.ndarray, xy: tuple[int, int], size: int) -> None:
        """A handwritten-looking note that is not a signature: a date, an amount, initials."""
        r = self.rng
        kind = r.integers(4)
        if kind == 0:
            text = f"{r.integers(1, 13)}/{r.integers(1, 29)}/{r.integers(70, 100)}"
        elif kind == 1:
            text = f"${r.integers(10, 99999)}.{r.integers(0, 99):02d}"
        elif kind == 2:
            text = "".join(r.choice(list(string.ascii_uppercase), r.integers(2, 4)))
        else:
            text = self._words(int(r.integers(1, 4)))
        face = HERSHEY_SCRIPT[r.integers(len(HERSHEY_SCRIPT))] if r.random() < 0.7 else cv2.FONT_HERSHEY_SIMPLEX
        layer = np.zeros_like(page)
        cv2.putText(layer, text, (xy[0], xy[1] + size), face, size / 30.0, 255, max(1, size // 12), cv2.LINE_AA)
        angle = r.uniform(-8, 8)
        m = cv2.getRotationMatrix2D((float(xy[0]), float(xy[1] + size)), angle, 1.0)
        layer = cv2.warpAffine(layer, m, (page.shape[1], page.shape[0]))
        _blend_ink(page, layer, r.uniform(0.5, 0.95))

    # ----------------------------------------------------------------- page elements
    def _paragraph(self, page, x, y, width, size, lines) -> int:
        for _ in range(lines):
            if y > page.shape[0] - size * 2:
                break
            n = max(1, int(width / (size * 3.2) * self.rng.uniform(0.6, 1.0)))
            y += self._text(page, (x, y), self._words(n), size)
        return y

    def _table(self, page, x, y, width, size) -> int:
        r = self.rng
        rows, cols = int(r.integers(2, 7)), int(r.integers(2, 6))
        rh, cw = int(size * 1.8), width // cols
        for i in range(rows + 1):
            cv2.line(page, (x, y + i * rh), (x + cols * cw, y + i * rh), 30, 1 + int(r.random() < 0.3))
        for j in range(cols + 1):
            cv2.line(page, (x + j * cw, y), (x + j * cw, y + rows * rh), 30, 1)
        for i in range(rows):
            for j in range(cols):
                if r.random() < 0.8:
                    self._text(page, (x + j * cw + 4, y + i * rh + 3), self._words(1), int(size * 0.9))
        return y + rows * rh + size

    def _stamp(self, page, cx, cy, size) -> None:
        r = self.rng
        layer = np.zeros_like(page)
        if r.random() < 0.5:
            cv2.circle(layer, (cx, cy), size, 255, 2)
            cv2.circle(layer, (cx, cy), int(size * 0.8), 255, 1)
        else:
            cv2.rectangle(layer, (cx - size, cy - size // 2), (cx + size, cy + size // 2), 255, 2)
        text = r.choice(["RECEIVED", "APPROVED", "PAID", "COPY", "CONFIDENTIAL", "FILED"])
        cv2.putText(layer, str(text), (cx - int(size * 0.8), cy + 5), cv2.FONT_HERSHEY_DUPLEX, size / 70, 255, 2)
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), r.uniform(-30, 30), 1.0)
        _blend_ink(page, cv2.warpAffine(layer, m, (page.shape[1], page.shape[0])), r.uniform(0.3, 0.7))

    def _logo(self, page, x, y, size) -> None:
        r = self.rng
        if self.style >= 2 and r.random() < 0.35:
            self._script_letterhead(page, x, y, size)
            return
        if r.random() < 0.5:
            cv2.circle(page, (x + size // 2, y + size // 2), size // 2, int(r.integers(0, 120)), -1)
        else:
            cv2.rectangle(page, (x, y), (x + size, y + size), int(r.integers(0, 120)), -1)
        self._text(page, (x + size + 10, y + size // 4), self._words(2).upper(), int(size * 0.5))

    def _script_letterhead(self, page, x, y, size) -> None:
        """A company name set in a script typeface: cursive, large, and not a signature."""
        r = self.rng
        text = self._words(int(r.integers(1, 3))).title()
        face = HERSHEY_SCRIPT[r.integers(len(HERSHEY_SCRIPT))]
        scale = size / r.uniform(28.0, 40.0)
        thick = max(2, int(round(size / r.uniform(12, 20))))
        cv2.putText(page, text, (x, y + size), face, scale, int(r.integers(0, 80)), thick, cv2.LINE_AA)
        if r.random() < 0.6:
            self._text(page, (x + int(size * 0.5), y + int(size * 1.25)), self._words(3).upper(), max(8, size // 4))

    def _signature(self, page, x, y, target_w, max_h: int | None = None,
                   bottom_at: int | None = None) -> tuple[int, int, int, int] | None:
        """Paste a real signature with its top-left near (x, y) (or its bottom at
        ``bottom_at``), at most ``max_h`` tall; returns its ink box."""
        r = self.rng
        ink = self.pool.inks[r.integers(len(self.pool.inks))]
        h, w = ink.shape
        scale = target_w / w
        if max_h is not None and h * scale > max_h:
            scale = max_h / h
        nw, nh = max(4, int(w * scale)), max(4, int(h * scale * r.uniform(0.8, 1.2)))
        ink = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if r.random() < 0.3:  # a slanted or rotated signature
            m = cv2.getRotationMatrix2D((nw / 2, nh / 2), r.uniform(-12, 12), 1.0)
            ink = cv2.warpAffine(ink, m, (nw, nh))
        H, W = page.shape
        if bottom_at is not None:
            y = bottom_at - nh
        x, y = int(np.clip(x, 0, W - nw)), int(np.clip(y, 0, H - nh))
        if nw >= W or nh >= H:
            return None
        layer = np.zeros_like(page)
        layer[y:y + nh, x:x + nw] = ink
        _blend_ink(page, layer, r.uniform(0.55, 1.0))
        ys, xs = np.nonzero(layer > 60)
        if len(xs) == 0:
            return None
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    # ----------------------------------------------------------------- whole page
    def page(self, out_size: int = 640, p_empty: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
        """(page uint8 (out_size, out_size), boxes (N, 4) float32 in its pixels)."""
        r = self.rng
        W = int(r.integers(900, 1300))
        H = int(W * r.uniform(1.0, 1.45))
        page = np.full((H, W), 255, np.uint8)
        margin = int(W * r.uniform(0.05, 0.12))
        base = int(r.integers(14, 30))
        boxes: list[tuple[int, int, int, int]] = []
        y = margin
        if r.random() < 0.6:
            self._logo(page, margin, y, int(r.integers(40, 90)))
            y += 100
        if r.random() < 0.7:
            y += self._text(page, (margin + int(r.integers(0, W // 3)), y), self._words(int(r.integers(2, 6))).upper(),
                            int(base * r.uniform(1.3, 2.0)))
        n_sig = 0 if r.random() < p_empty else int(r.choice([1, 1, 1, 2, 2, 3]))
        blocks = int(r.integers(2, 6))
        sig_blocks = set(r.choice(blocks + 1, size=min(n_sig, blocks + 1), replace=False).tolist()) if n_sig else set()
        for b in range(blocks + 1):
            if y > H - margin - base * 3:
                break
            if b in sig_blocks and self.pool is not None:
                if self.style >= 2 and r.random() < 0.3:
                    y = self._signature_row(page, margin, y, W, base, boxes)
                else:
                    y = self._signature_block(page, margin, y, W, H, base, boxes)
                continue
            kind = r.random()
            if kind < 0.55:
                y = self._paragraph(page, margin, y, W - 2 * margin, base, int(r.integers(2, 12)))
            elif kind < 0.75:
                y = self._table(page, margin, y, W - 2 * margin, base)
            elif kind < 0.9:
                y = self._form_lines(page, margin, y, W, base)
            else:
                self._handwriting(page, (int(r.integers(margin, W // 2)), y), int(base * r.uniform(1.0, 2.0)))
                y += base * 3
            y += int(base * r.uniform(0.5, 2.0))
        for _ in range(int(r.integers(0, 4))):  # notes in the margins, not signatures
            self._handwriting(page, (int(r.integers(0, W - 200)), int(r.integers(0, H - 60))),
                              int(base * r.uniform(1.0, 2.2)))
        if r.random() < 0.35:
            self._stamp(page, int(r.integers(100, W - 100)), int(r.integers(100, H - 100)), int(r.integers(40, 100)))
        return self._degrade(page, np.array(boxes, np.float32).reshape(-1, 4), out_size)

    def _form_lines(self, page, margin, y, W, base) -> int:
        r = self.rng
        for _ in range(int(r.integers(1, 4))):
            label = str(r.choice(["Name", "Date", "Address", "Account", "Amount", "Title", "Phone"])) + ":"
            self._text(page, (margin, y), label, base)
            cv2.line(page, (margin + base * 6, y + base + 2), (W - margin, y + base + 2), 40, 1)
            if r.random() < 0.3:
                self._handwriting(page, (margin + base * 7, y - base // 2), int(base * 1.4))
            y += int(base * 2.2)
        if r.random() < 0.4:  # a form box
            cv2.rectangle(page, (margin, y), (W - margin, y + base * 4), 40, 1)
            y += base * 5
        return y

    def _signature_block(self, page, margin, y, W, H, base, boxes) -> int:
        r = self.rng
        x = margin + int(r.integers(0, max(1, W // 2)))
        if r.random() < 0.7:
            y += self._text(page, (x, y), str(r.choice(CLOSINGS)), base)
        target_w = int(W * r.uniform(0.12, 0.4))
        sig_y = y + int(r.integers(-base, base))
        box = self._signature(page, x + int(r.integers(-20, 40)), sig_y, target_w)
        if box is None:
            return y + base
        boxes.append(box)
        bottom = box[3]
        if r.random() < 0.6:  # the signature line, often crossed by the signature
            ly = int(bottom - (box[3] - box[1]) * r.uniform(0.0, 0.4))
            cv2.line(page, (x - 10, ly), (x + target_w + 30, ly), 30, 1)
        if r.random() < 0.7:
            self._text(page, (x, bottom + 4), self._words(int(r.integers(2, 4))).title(), base)
        return bottom + base * 2

    def _signature_row(self, page, margin, y, W, base, boxes) -> int:
        """2-4 signing slots side by side, each a line with a caption under it.

        Most slots are signed; some hold a handwritten date instead (a hard negative in
        the very place a signature is expected) and some stay blank.
        """
        r = self.rng
        slots = int(r.integers(2, 5))
        slot_w = (W - 2 * margin) // slots
        room = int(max(base * 2.5, slot_w * r.uniform(0.2, 0.35)))  # height left for the signatures
        bottom = y
        for k in range(slots):
            x = margin + k * slot_w + int(slot_w * r.uniform(0.05, 0.15))
            line_w = int(slot_w * r.uniform(0.6, 0.85))
            line_y = y + room
            what = r.random()
            if what < 0.75:
                target_w = int(line_w * r.uniform(0.5, 0.95))
                box = self._signature(page, x + int(r.integers(0, max(1, line_w - target_w))), 0, target_w,
                                      max_h=room, bottom_at=line_y + int(room * r.uniform(-0.05, 0.25)))
                if box is not None:
                    boxes.append(box)
                    bottom = max(bottom, box[3])
            elif what < 0.9:
                self._handwriting(page, (x, line_y - int(base * 1.6)), int(base * r.uniform(1.0, 1.5)))
            cv2.line(page, (x, line_y), (x + line_w, line_y), int(r.integers(20, 60)), 1)
            self._text(page, (x, line_y + 4), str(r.choice(CAPTIONS)), int(base * 0.8))
            bottom = max(bottom, line_y + base * 2)
        return bottom + base

    def _inset(self, img: np.ndarray, boxes: np.ndarray, tone: float) -> tuple[np.ndarray, np.ndarray]:
        """The document photographed or web-sized: it fills only part of the image, and
        sometimes a copy of it sits beside it (two certificates on one scan)."""
        r = self.rng
        H, W = img.shape
        scale = r.uniform(0.45, 0.8)
        nh, nw = int(H * scale), int(W * scale)
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        twice = r.random() < 0.4
        CW = int(nw * 2.1) if twice else int(nw / r.uniform(0.6, 0.9))
        CH = max(nh + 2, int(max(CW, nh) * r.uniform(0.7, 1.0)))
        canvas = np.full((CH, CW), float(255 * tone * r.uniform(0.9, 1.0)), np.float32)
        out = []
        for k in range(2 if twice else 1):
            ox = int(k * nw * 1.05) + (0 if twice else int(r.integers(0, max(1, CW - nw))))
            oy = int(r.integers(0, max(1, CH - nh)))
            canvas[oy:oy + nh, ox:ox + nw] = small
            out.append(boxes * scale + np.array([ox, oy, ox, oy], np.float32))
        return canvas, np.concatenate(out).reshape(-1, 4)

    def _degrade(self, page: np.ndarray, boxes: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.rng
        H, W = page.shape
        # Paper tone and uneven illumination.
        tone = r.uniform(0.8, 1.0)
        grad = np.linspace(r.uniform(0.85, 1.0), 1.0, H, dtype=np.float32)[:, None]
        img = page.astype(np.float32) * tone * (grad if r.random() < 0.4 else 1.0)
        # A small rotation, as a sheet put crooked on the scanner.
        if r.random() < 0.5:
            angle = r.uniform(-3, 3)
            m = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0)
            img = cv2.warpAffine(img, m, (W, H), borderValue=float(255 * tone))
            boxes = _rotate_boxes(boxes, m)
        if self.style >= 2 and r.random() < 0.15:
            img, boxes = self._inset(img, boxes, tone)
            H, W = img.shape
        # To the model's square: stretched like the real export, or letterboxed like the runtime.
        if r.random() < 0.5:
            sx, sy = out_size / W, out_size / H
            img = cv2.resize(img, (out_size, out_size), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        else:
            s = out_size / max(W, H)
            nw, nh = int(round(W * s)), int(round(H * s))
            canvas = np.full((out_size, out_size), float(255 * tone), np.float32)
            px, py = (out_size - nw) // 2, (out_size - nh) // 2
            canvas[py:py + nh, px:px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            img = canvas
            boxes = boxes * s + np.array([px, py, px, py], np.float32)
        if r.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), r.uniform(0.3, 0.9))
        img += r.normal(0, r.uniform(0, 10), img.shape).astype(np.float32)
        if r.random() < 0.3:  # salt and pepper from dust
            spots = r.random(img.shape) < r.uniform(0.0005, 0.004)
            img[spots] = r.uniform(0, 80)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if r.random() < 0.5:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(r.integers(35, 95))])
            img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
        return img, boxes.astype(np.float32)


def _blend_ink(page: np.ndarray, ink: np.ndarray, strength: float) -> None:
    """Multiply-style ink: darken the page where ``ink`` (0..255) is, never lighten it."""
    dark = 255.0 - ink.astype(np.float32) * strength
    np.minimum(page, dark.astype(np.uint8), out=page)


def _rotate_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return boxes
    out = []
    for x0, y0, x1, y1 in boxes:
        pts = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float32) @ m.T
        out.append([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    return np.array(out, np.float32)
