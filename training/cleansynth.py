"""Training pairs for the learned cleaner: a signature crop with clutter, and the signature's
own ink as the target.

A real signature (ink image, :class:`training.docsynth.SignaturePool`) is laid on a crop-sized
background that holds what a detector's box around a signature holds on real documents:

* ``page``: a window of a real scanned page (documents_tobacco800) away from its signatures:
  printed text, lines, table rules, logos at a random scale;
* ``cheque``: the region around the signature field of a real blank cheque template (SSBI);
* ``synthetic``: printed text in the system's fonts and OpenCV's, a signature line, form-box
  borders, a table grid, a stamp (``training.docsynth.PageSynth``'s drawing);
* ``plain``: paper only, so that the cleaner learns to leave a clean crop alone;

often with synthetic lines or a stamp on top of a real background too. Then ink is
blended multiplicatively (clutter and signature darken each other where they cross), and
the crop is degraded as a scan (paper tone, uneven light, blur, noise, JPEG).

The target is the signature's own ink, so a pixel where printed text crosses a stroke is
signature (it must be kept). Input and target go through the runtime's
:func:`sigedge.clean.cleaner_canvas`, so training sees exactly what the runtime feeds.

Which pages and cheque templates feed training is the caller's choice: the training script
uses the page-disjoint training pages of documents_tobacco800 and cheque templates 1-7;
``benchmarks/cleaner.py`` evaluates on the validation pages and templates 8-10.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sigedge.clean import cleaner_canvas
from sigedge.imageio import load_image
from sigedge.normalize import flatten_background, to_gray
from training.docsynth import PageSynth, SignaturePool

#: Background kinds and their shares in training.
KINDS = ("page", "cheque", "synthetic", "plain")
KIND_WEIGHTS = (0.35, 0.15, 0.35, 0.15)
#: Cheque templates (by file order) used for training; the rest are for evaluation.
TRAIN_CHEQUES = 7
#: Darkness (0..255 ink) above which a signature pixel is target ink.
TARGET_INK = 40


@dataclass
class ClutterSources:
    """Real backgrounds: gray pages with their signature boxes, and cheque regions."""

    pages: list[tuple[np.ndarray, np.ndarray]]
    cheques: list[np.ndarray]

    @classmethod
    def load(cls, data_root: Path, page_names: list[str], cheque_ids: range | list[int]) -> "ClutterSources":
        from training.detector_data import load_pages

        pages = load_pages(data_root, page_names) if page_names else []
        return cls(pages, load_cheque_regions(data_root, cheque_ids))


def load_cheque_regions(data_root: Path, ids: range | list[int]) -> list[np.ndarray]:
    """The area around each chosen cheque template's signature field (gray), where a signature
    is written: the field box grown by its own size to the left, above and below."""
    folder = data_root / "ssbi" / "checks"
    if not (folder / "labels.json").is_file():
        return []
    meta = json.loads((folder / "labels.json").read_text())
    images = sorted(meta["images"], key=lambda m: m["file_name"])
    sig_cat = next(c["id"] for c in meta["categories"] if c["name"] == "signature")
    out = []
    for k in ids:
        if k >= len(images):
            continue
        im = images[k]
        boxes = [a["bbox"] for a in meta["annotations"] if a["image_id"] == im["id"] and a["category_id"] == sig_cat]
        gray = to_gray(load_image(folder / "data" / im["file_name"]))
        H, W = gray.shape
        for x, y, w, h in boxes:
            x0, y0 = int(max(0, x - 0.5 * w)), int(max(0, y - 1.0 * h))
            x1, y1 = int(min(W, x + 1.2 * w)), int(min(H, y + 2.0 * h))
            if x1 - x0 > 20 and y1 - y0 > 10:
                out.append(gray[y0:y1, x0:x1].copy())
    return out


class CleanerSynth:
    """Makes (input canvas, target canvas) pairs; one instance per thread."""

    def __init__(self, pool: SignaturePool, sources: ClutterSources, seed: int, height: int = 128, width: int = 256,
                 kind_weights: tuple[float, ...] = KIND_WEIGHTS, augment_ink: float = 0.0):
        self.pool, self.sources = pool, sources
        #: chance that a signature drawn from the pool is warped (affine, elastic, pen) first,
        #: so that the cleaner learns handwriting rather than the pool's signatures
        self.augment_ink = augment_ink
        self.rng = np.random.default_rng(seed)
        self.height, self.width = height, width
        self.drawer = PageSynth(None, seed=seed + 1)
        self.drawer.rng = self.rng  # one random stream for the whole sample
        w = np.array(kind_weights, np.float64)
        if not sources.pages:
            w[0] = 0
        if not sources.cheques:
            w[1] = 0
        self.kind_p = w / w.sum()

    # ------------------------------------------------------------------ one sample
    def crop(self, kind: str | None = None, ink: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """(degraded gray crop uint8, target ink mask bool of the same shape, background kind).
        ``ink``: this signature (an ink image as the pool holds) instead of one from the pool."""
        r = self.rng
        kind = kind or str(r.choice(KINDS, p=self.kind_p))
        if ink is None:
            ink = self.pool.inks[r.integers(len(self.pool.inks))]
            # no draw when off: the stream, and so v1's pairs and export report, stay as they were
            if self.augment_ink > 0 and r.random() < self.augment_ink:
                ink = warp_ink(ink, r)
        sig_w = int(r.uniform(120, 520))
        scale = sig_w / ink.shape[1]
        sig_h = max(4, int(ink.shape[0] * scale * r.uniform(0.85, 1.15)))
        ink = cv2.resize(ink, (sig_w, sig_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        W = int(sig_w / r.uniform(0.55, 0.97))
        H = int(max(sig_h / r.uniform(0.5, 0.95), W * r.uniform(0.25, 0.6)))
        background = self._background(kind, H, W, sig_h)
        if kind != "plain" and r.random() < (0.9 if kind == "synthetic" else 0.35):
            self._synthetic_clutter(background, sig_h)
        y, x = int(r.integers(0, max(1, H - sig_h + 1))), int(r.integers(0, max(1, W - sig_w + 1)))
        layer = np.zeros((H, W), np.uint8)
        layer[y:y + sig_h, x:x + sig_w] = ink[:H - y, :W - x]
        strength = r.uniform(0.55, 1.0)
        page = (background.astype(np.float32) * (1.0 - layer.astype(np.float32) / 255.0 * strength))
        target = layer.astype(np.float32) * strength > TARGET_INK
        return self._degrade(page), target, kind

    def pair(self, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(input canvas float32 (H, W), paper 0 ink 1; target canvas float32 (H, W) in [0, 1])."""
        crop, target, _ = self.crop(kind)
        return canvas_pair(crop, target, self.height, self.width)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.pair() for _ in range(n)))
        return np.stack(xs)[..., None], np.stack(ys)[..., None]

    # ------------------------------------------------------------------ backgrounds
    def _background(self, kind: str, H: int, W: int, sig_h: int) -> np.ndarray:
        r = self.rng
        if kind == "page":
            return self._page_window(H, W, sig_h)
        if kind == "cheque":
            region = self.sources.cheques[r.integers(len(self.sources.cheques))]
            rh, rw = region.shape
            # a window of the region with the crop's aspect, at least half the region's height
            wh = int(r.uniform(0.5, 1.0) * rh)
            ww = min(rw, int(wh * W / H))
            wh = min(rh, int(ww * H / W))
            y0, x0 = int(r.integers(0, rh - wh + 1)), int(r.integers(0, rw - ww + 1))
            return cv2.resize(region[y0:y0 + wh, x0:x0 + ww], (W, H), interpolation=cv2.INTER_LINEAR)
        return np.full((H, W), 255, np.uint8)

    def _page_window(self, H: int, W: int, sig_h: int) -> np.ndarray:
        """A window of a real page that overlaps none of its signature boxes, scaled so that its
        printed text comes out a fraction of the signature's height."""
        r = self.rng
        for _ in range(20):
            gray, boxes = self.sources.pages[r.integers(len(self.sources.pages))]
            ph, pw = gray.shape
            # page text is ~6-12 px on a 640 px page; make it 0.15-0.6 of the signature's height
            zoom = sig_h * r.uniform(0.15, 0.6) / 9.0
            wh, ww = int(H / zoom), int(W / zoom)
            if wh < 8 or ww < 8 or wh >= ph or ww >= pw:
                continue
            y0, x0 = int(r.integers(0, ph - wh)), int(r.integers(0, pw - ww))
            if len(boxes) and np.any((boxes[:, 0] < x0 + ww) & (boxes[:, 2] > x0) & (boxes[:, 1] < y0 + wh)
                                     & (boxes[:, 3] > y0)):
                continue
            return cv2.resize(gray[y0:y0 + wh, x0:x0 + ww], (W, H), interpolation=cv2.INTER_LINEAR)
        return np.full((H, W), 255, np.uint8)

    def _synthetic_clutter(self, page: np.ndarray, sig_h: int) -> None:
        """Printed text, lines, boxes, grids and stamps drawn straight onto ``page``."""
        r, d = self.rng, self.drawer
        H, W = page.shape
        for _ in range(int(r.integers(1, 4))):
            what = r.random()
            if what < 0.4:  # lines of printed text, often through the signature
                size = int(np.clip(sig_h * r.uniform(0.12, 0.45), 8, 60))
                y = int(r.integers(-size // 2, max(1, H - size // 2)))
                for _ in range(int(r.integers(1, 4))):
                    n = max(1, int(W / (size * 3.0) * r.uniform(0.3, 1.2)))
                    y += d._text(page, (int(r.integers(-size, max(1, W // 2))), y), d._words(n), size,
                                 ink=int(r.integers(0, 90)))
            elif what < 0.65:  # a signature line or ruled line
                y = int(H * r.uniform(0.3, 1.0))
                x0, x1 = int(W * r.uniform(-0.1, 0.3)), int(W * r.uniform(0.7, 1.1))
                cv2.line(page, (x0, y), (x1, y + int(r.integers(-2, 3))), int(r.integers(0, 120)),
                         int(r.integers(1, 4)))
            elif what < 0.8:  # a form box's border, partly in view
                x0, y0 = int(W * r.uniform(-0.2, 0.15)), int(H * r.uniform(-0.2, 0.2))
                x1, y1 = int(W * r.uniform(0.85, 1.2)), int(H * r.uniform(0.8, 1.2))
                cv2.rectangle(page, (x0, y0), (x1, y1), int(r.integers(0, 120)), int(r.integers(1, 4)))
            elif what < 0.88:  # a table grid
                step_y, step_x = int(r.integers(max(8, H // 6), max(9, H // 2))), int(r.integers(W // 6, W // 2))
                tone, thick = int(r.integers(0, 120)), int(r.integers(1, 3))
                for yy in range(int(r.integers(0, step_y)), H, step_y):
                    cv2.line(page, (0, yy), (W, yy), tone, thick)
                for xx in range(int(r.integers(0, step_x)), W, step_x):
                    cv2.line(page, (xx, 0), (xx, H), tone, thick)
            else:  # a stamp
                d._stamp(page, int(r.integers(0, W)), int(r.integers(0, H)), int(H * r.uniform(0.3, 0.7)))

    def _degrade(self, page: np.ndarray) -> np.ndarray:
        r = self.rng
        H, W = page.shape
        img = page * r.uniform(0.75, 1.0)
        if r.random() < 0.4:
            img *= np.linspace(r.uniform(0.8, 1.0), 1.0, W, dtype=np.float32)[None, :]
        if r.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), r.uniform(0.3, 1.2))
        img = img + r.normal(0, r.uniform(0, 8), img.shape).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if r.random() < 0.5:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(r.integers(40, 95))])
            img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
        return img


def warp_ink(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A signature's ink image (0 paper, 255 ink) turned, sheared, warped and re-inked as the
    embedder's augmentation does, cropped back to its ink."""
    from training.augment import elastic, pen, random_affine

    pad = max(4, ink.shape[0] // 3)
    out = np.pad(ink, pad)
    out = cropped_to_ink(pen(elastic(random_affine(out, rng), rng), rng))
    return ink if out is None else out


def cropped_to_ink(ink: np.ndarray) -> np.ndarray | None:
    """An ink image (0 paper, 255 ink) cut to the box of its visible ink (None: none)."""
    from sigedge.normalize import crop_to_ink

    box = crop_to_ink(ink > 20)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return ink[y0:y1, x0:x1]


def canvas_pair(crop: np.ndarray, target: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The cleaner's input canvas of ``crop`` (the runtime's own preprocessing) and the target
    mask brought onto the same canvas (area-averaged: a soft target at stroke edges)."""
    canvas, p = cleaner_canvas(flatten_background(crop), height, width)
    t = np.zeros((height, width), np.float32)
    interp = cv2.INTER_AREA if p.height < target.shape[0] else cv2.INTER_LINEAR
    t[p.top:p.top + p.height, p.left:p.left + p.width] = cv2.resize(target.astype(np.float32), (p.width, p.height),
                                                                    interpolation=interp)
    return canvas, np.clip(t, 0.0, 1.0, out=t)


__all__ = ["ClutterSources", "CleanerSynth", "canvas_pair", "load_cheque_regions", "KINDS", "TRAIN_CHEQUES"]
