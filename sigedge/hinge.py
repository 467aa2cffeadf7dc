"""The contour-hinge descriptor of a signature's ink, for the learned scorer.

Bulacu and Schomaker's hinge feature (IEEE TPAMI 29(4), 2007), made for writer
identification: at every point of the ink's outer and inner contours, the directions of the
two contour fragments of ``L`` points leaving it, one each way, counted in a joint histogram.
It describes how the pen turns (curvature and its direction), which a forger drawing the
shape slowly tends to get wrong. It is read from the binary ink alone, so the pen's darkness
does not enter it. The embedder's canvas (128 x 256 for the whole signature) is too coarse
for it, so the ink box of the cleaned image is resized to ``HingeSpec.height`` pixels high
first: references and queries scanned at different resolutions stay comparable.

With ``stroke="skeleton"`` (the shipped scorer's) the ink is first thinned to its
one-pixel centre line (Zhang-Suen) and redrawn three pixels wide, and the hinge is traced on
that: the outline of the ink as it is carries the edge of the pen's trace, which differs
between a tablet's rendering and a scanned pen. Traced on the ink's own outline, the hinge
took the cross-media set's random EER (tablet and paper mixed) from 7.2 to 13.4 %
(four-fold mean, ``benchmarks/crossfit_scorer.py``); traced on the skeleton, less (model
card, "Contour hinge and a cross-fitted scorer").

A bundle whose learned scorer uses it states its parameters in the manifest
(``verification.scorer.hinge``); :class:`sigedge.Pipeline` then measures it beside the ink
statistics, and the scorer weighs the chi-square distances of the query's histograms to the
references' (model card, "Contour hinge and a cross-fitted scorer").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ModelError, NoSignatureError

if TYPE_CHECKING:
    from .normalize import NormalizeOptions

__all__ = ["HingeSpec", "STROKES", "chi_square_distances", "contour_hinge", "hinge_distances", "hinge_histograms",
           "ink_hinge", "thin"]

#: How the stroke is traced: its own outline, or its centre line redrawn at one width.
STROKES = ("ink", "skeleton")
#: Widest ink box, in ink heights, traced at the full height (SigComp's signatures are 2-3).
MAX_ASPECT = 16


@dataclass(frozen=True)
class HingeSpec:
    """How the contour hinge is measured: the ink height, the fragment lengths, the direction bins."""

    #: Height (pixels) the ink box is resized to before its contours are traced.
    height: int = 200
    #: Fragment lengths (contour points), one histogram each.
    fragments: tuple[int, ...] = (4, 8)
    #: Direction bins over the full turn, for each of the two fragments.
    bins: int = 12
    #: ``ink``: the outline of the ink as it is; ``skeleton``: the outline of its centre
    #: line redrawn three pixels wide.
    stroke: str = "skeleton"

    def __post_init__(self) -> None:
        if self.height < 16 or self.bins < 2 or not self.fragments or min(self.fragments) < 1:
            raise ModelError(f"a contour hinge needs a height of at least 16, 2 bins or more and positive fragment "
                             f"lengths, not {self}")
        if self.stroke not in STROKES:
            raise ModelError(f"a contour hinge traces the stroke as one of {list(STROKES)}, not {self.stroke!r}")

    @property
    def size(self) -> int:
        """Values of one signature's descriptor: a bins x bins histogram a fragment length."""
        return len(self.fragments) * self.bins * self.bins

    def to_manifest(self) -> dict:
        return {"height": self.height, "fragments": list(self.fragments), "bins": self.bins, "stroke": self.stroke,
                "distance": "chi-square of each fragment length's histogram"}

    @classmethod
    def from_manifest(cls, block: dict | None) -> "HingeSpec | None":
        if not block:
            return None
        try:
            return cls(height=int(block["height"]), fragments=tuple(int(f) for f in block["fragments"]),
                       bins=int(block["bins"]), stroke=str(block["stroke"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the manifest's contour hinge is malformed ({exc!r})") from None


def _ink_mask(image: np.ndarray, height: int, options: NormalizeOptions) -> np.ndarray:
    """The cropped ink mask (uint8 0/1) of a cleaned signature, resized to ``height`` rows."""
    from .normalize import crop_to_ink, find_ink, to_gray

    _, mask = find_ink(to_gray(image), options)
    box = crop_to_ink(mask)
    if box is None:
        raise NoSignatureError("no ink found to trace the contours of")
    x0, y0, x1, y1 = box
    return _resized(mask[y0:y1, x0:x1], height)


def _resized(ink: np.ndarray, height: int) -> np.ndarray:
    """A mask cropped to its ink, resized to ``height`` rows (uint8 0/1)."""
    import cv2  # here, as in sigedge.scoring, so that reading a manifest's scorer stays light

    crop = np.asarray(ink).astype(np.uint8) * 255
    if crop.size == 0 or not crop.any():
        raise NoSignatureError("no ink found to trace the contours of")
    # a box flatter than MAX_ASPECT (a stray rule line, not a signature) is resized by its width
    # instead, so the mask, and the thinning's time, stay bounded
    scale = min(height / crop.shape[0], MAX_ASPECT * height / crop.shape[1])
    size = (max(1, int(round(crop.shape[1] * scale))), max(1, int(round(crop.shape[0] * scale))))
    return (cv2.resize(crop, size, interpolation=cv2.INTER_AREA) > 127).astype(np.uint8)


def contour_hinge(image: np.ndarray, spec: HingeSpec | None = None,
                  options: NormalizeOptions | None = None) -> np.ndarray:
    """float32 (spec.size,): the hinge histograms of a cleaned signature (uint8 gray or BGR),
    one a fragment length, each summing to 1 (all 0 where no contour is that long)."""
    from .normalize import NormalizeOptions

    spec = spec or HingeSpec()
    return _traced(_ink_mask(image, spec.height, options or NormalizeOptions()), spec)


def ink_hinge(ink: np.ndarray, spec: HingeSpec | None = None) -> np.ndarray:
    """:func:`contour_hinge` of a signature whose ink mask, cropped to the ink, is already at
    hand (:attr:`sigedge.normalize.NormalizedSignature.ink_mask`): the same histograms
    without finding the ink a second time."""
    spec = spec or HingeSpec()
    return _traced(_resized(ink, spec.height), spec)


def _traced(mask: np.ndarray, spec: HingeSpec) -> np.ndarray:
    import cv2

    if spec.stroke == "skeleton":
        mask = cv2.dilate(thin(mask), np.ones((3, 3), np.uint8))
    return hinge_histograms(mask, spec.fragments, spec.bins)


def hinge_histograms(mask: np.ndarray, fragments: tuple[int, ...], bins: int) -> np.ndarray:
    """float32 (len(fragments) * bins * bins,): the hinge histograms of the contours of a binary
    mask (uint8 0/1), one a fragment length, each summing to 1 (all 0 where no contour is that long)."""
    import cv2

    contours, _ = cv2.findContours(np.ascontiguousarray(mask, np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    counts = np.zeros((len(fragments), bins, bins))
    for contour in contours:
        points = contour[:, 0, :].astype(np.float32)
        for f, length in enumerate(fragments):
            if len(points) < 2 * length + 1:  # a contour too short to hold both fragments
                continue
            ahead = np.roll(points, -length, axis=0) - points
            behind = np.roll(points, length, axis=0) - points
            np.add.at(counts[f], (_direction_bin(ahead, bins), _direction_bin(behind, bins)), 1.0)
    flat = counts.reshape(len(fragments), -1)
    return (flat / np.maximum(flat.sum(axis=1, keepdims=True), 1.0)).ravel().astype(np.float32)


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods of an ink pixel (bit k: the k-th neighbour clockwise
    from north, P2..P9 in Zhang and Suen's names), whether each of the two sub-iterations of
    Zhang-Suen thinning (CACM 27(3), 1984) removes the pixel."""
    first, second = np.zeros(256, bool), np.zeros(256, bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2, P3, P4, P5, P6, P7, P8, P9
        neighbours = sum(p)
        transitions = sum(1 for k in range(8) if p[k] == 0 and p[(k + 1) % 8] == 1)
        if not (2 <= neighbours <= 6 and transitions == 1):
            continue
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        first[code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        second[code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return first, second


_THINNING = _thinning_tables()


#: Flat-index offsets of P2..P9 (clockwise from north) are these (row, column) steps.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def thin(mask: np.ndarray) -> np.ndarray:
    """The one-pixel-wide centre line (uint8 0/1) of a binary mask, by Zhang-Suen thinning.

    Each sub-iteration looks only at the pixels still ink (a fifth of a signature's ink box
    or less), gathered by flat index, rather than at the whole image: the same parallel
    rule on the same neighbourhoods, so the same centre line as :func:`_thin_dense`, in a
    fraction of the time (``benchmarks/hinge_speed.py``).
    """
    img = np.pad((np.asarray(mask) > 0).astype(np.uint8), 1)  # the zero ring keeps every gather inside
    w = img.shape[1]
    flat = img.reshape(-1)
    steps = [dy * w + dx for dy, dx in _NEIGHBOURS]
    ink = np.flatnonzero(flat)
    while True:
        changed = False
        for table in _THINNING:
            # every neighbourhood is read before any pixel is removed: the rule is parallel
            code = flat[ink + steps[0]]
            for k in range(1, 8):
                code |= flat[ink + steps[k]] << k
            remove = table[code]
            if remove.any():
                flat[ink[remove]] = 0
                ink = ink[~remove]
                changed = True
        if not changed:
            return img[1:-1, 1:-1].copy()


def _thin_dense(mask: np.ndarray) -> np.ndarray:
    """:func:`thin` over the whole image at each sub-iteration: the plain form, kept as the
    reference the sparse one is tested and timed against."""
    img = np.pad((np.asarray(mask) > 0).astype(np.uint8), 1)
    h, w = img.shape
    while True:
        changed = False
        for table in _THINNING:
            code = np.zeros((h - 2, w - 2), np.int32)
            for k, (dy, dx) in enumerate(_NEIGHBOURS):
                code |= img[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx].astype(np.int32) << k
            remove = (img[1:-1, 1:-1] == 1) & table[code]
            if remove.any():
                img[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def _direction_bin(v: np.ndarray, bins: int) -> np.ndarray:
    turn = np.mod(np.arctan2(v[:, 1], v[:, 0]), 2 * np.pi) / (2 * np.pi)
    return np.minimum((turn * bins).astype(int), bins - 1)


def chi_square_distances(a: np.ndarray, b: np.ndarray, groups: int, bins: int) -> np.ndarray:
    """Chi-square distances (..., groups) between vectors (..., groups * bins) of ``groups``
    normalised histograms of ``bins`` each, that broadcast: 0 for equal histograms, 1 for
    histograms with no bin in common."""
    a = np.asarray(a, np.float64).reshape(*np.shape(a)[:-1], groups, bins)
    b = np.asarray(b, np.float64).reshape(*np.shape(b)[:-1], groups, bins)
    return 0.5 * np.sum((a - b) ** 2 / (a + b + 1e-12), axis=-1)


def hinge_distances(a: np.ndarray, b: np.ndarray, spec: HingeSpec) -> np.ndarray:
    """Chi-square distances (..., len(spec.fragments)) between hinge descriptors (..., spec.size)
    that broadcast: 0 for equal histograms, 1 for histograms with no bin in common."""
    return chi_square_distances(a, b, len(spec.fragments), spec.bins * spec.bins)
