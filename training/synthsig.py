"""Procedural signers for pre-training the embedder: thousands of synthetic identities.

Real data has a few hundred identities, too few for a network to learn what stays the
same across one person's signatures and what a copyist gets wrong. A synthetic signer is
a pen trajectory: one to three pen-down strokes, each a smooth curve through control
points that move left to right with letter-like humps, loops, ascenders and descenders,
an optional capital and flourish, drawn with a personal slant, baseline slope, stroke
width and pressure habit.

- A **genuine** sample re-draws the identity's trajectory with the writer's own small
  jitter (nobody signs twice alike) and a small change of pose.
- A **skilled forgery** re-draws the same shape the way a copyist does: larger shape and
  proportion errors, slant off, tremor, and slow, even, blunt-ended strokes instead of
  fluent tapered ones.

Samples are uint8 canvases laid out like the training cache of real signatures (ink high,
paper 0, cropped and fitted by the runtime's own ``fit_to_canvas``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sigedge.normalize import crop_to_ink, fit_to_canvas
from sigedge.synth import catmull_rom

log = logging.getLogger(__name__)

#: Letter shapes as control points (x in letter widths, y in x-heights, y up).
LETTERS: dict[str, list[tuple[float, float]]] = {
    "hump": [(0.0, 0.0), (0.25, 0.9), (0.5, 1.0), (0.75, 0.6), (1.0, 0.0)],
    "cup": [(0.0, 1.0), (0.2, 0.1), (0.5, 0.0), (0.8, 0.3), (1.0, 1.0)],
    "tall_loop": [(0.0, 0.2), (0.5, 1.8), (0.35, 2.3), (0.15, 1.9), (0.4, 0.3), (0.6, 0.0), (1.0, 0.4)],
    "descender": [(0.0, 0.6), (0.45, 0.3), (0.5, -0.9), (0.25, -1.3), (0.2, -0.6), (0.6, 0.1), (1.0, 0.4)],
    "e_loop": [(0.0, 0.3), (0.6, 0.7), (0.45, 1.0), (0.1, 0.65), (0.35, 0.05), (1.0, 0.3)],
    "oval": [(0.55, 1.0), (0.1, 0.7), (0.2, 0.05), (0.75, 0.1), (0.8, 0.85), (0.55, 1.0), (1.0, 0.5)],
    "spike": [(0.0, 0.0), (0.45, 1.2), (0.6, 0.9), (1.0, 0.0)],
    "double_hump": [(0.0, 0.0), (0.15, 0.9), (0.35, 0.4), (0.5, 0.95), (0.7, 0.5), (1.0, 0.0)],
}
LETTER_NAMES = sorted(LETTERS)
#: Pixels per x-height when drawing; the result is fitted to the canvas afterwards.
X_HEIGHT_PX = 26.0


@dataclass(frozen=True)
class Signer:
    """One synthetic identity: its pen-down strokes and its writing habits."""

    strokes: tuple[np.ndarray, ...]  # control points (K, 2) per stroke, x-height units, y up
    slant: float  # shear: x += slant * y
    slope: float  # baseline rotation, degrees
    width: float  # stroke width in x-heights
    taper: float  # how thin stroke ends get (fluent writers taper)
    pressure_var: float  # how much pressure varies along a stroke
    jitter: float  # the writer's own shape variability, x-heights
    seed: int  # per-signer stream for the pressure pattern


def random_signer(rng: np.random.Generator) -> Signer:
    """Draw a new identity."""
    points: list[tuple[float, float]] = []
    x = 0.0
    if rng.random() < 0.6:  # a capital: one big loop or spike, 2-3 x-heights tall
        big = rng.uniform(2.0, 3.2)
        shape = LETTERS[rng.choice(["tall_loop", "spike", "oval", "hump"])]
        w = rng.uniform(0.8, 1.6)
        points += [(x + px * w, py * big / max(1.0, max(p[1] for p in shape))) for px, py in shape]
        x += w
    breaks = []
    for _ in range(int(rng.integers(3, 10))):
        shape = LETTERS[LETTER_NAMES[int(rng.integers(len(LETTER_NAMES)))]]
        w = rng.uniform(0.45, 1.1)
        h = rng.uniform(0.75, 1.25)
        # each person's version of a letter: its control points moved a little, for good
        pts = [(x + (px + rng.normal(0, 0.08)) * w, py * h + rng.normal(0, 0.08)) for px, py in shape]
        if rng.random() < 0.15:
            breaks.append(len(points))
        points += pts
        x += w * rng.uniform(0.85, 1.15)
    if rng.random() < 0.5:  # flourish: a sweep back under the name, or a rising tail
        if rng.random() < 0.6:
            depth = rng.uniform(-0.9, -0.3)
            points += [(x + 0.4, 0.2), (x * 0.6, depth), (x * 0.2, depth + rng.normal(0, 0.2)),
                       (-0.2, depth + 0.3)]
        else:
            points += [(x + 0.5, 0.8), (x + 1.0, 1.8)]
    strokes = np.split(np.array(points, np.float32), sorted(set(breaks) - {0}))
    strokes = [s for s in strokes if len(s) >= 2]
    if rng.random() < 0.35:  # a dot or a bar: its own short stroke
        cx = rng.uniform(0.2, 0.8) * x
        strokes.append(np.array([(cx, 1.6), (cx + rng.uniform(0.05, 1.2), 1.6 + rng.normal(0, 0.1))], np.float32))
    return Signer(
        strokes=tuple(strokes),
        slant=float(rng.uniform(-0.5, 0.35)),
        slope=float(rng.uniform(-6, 6)),
        width=float(rng.uniform(0.05, 0.16)),
        taper=float(rng.uniform(0.3, 0.9)),
        pressure_var=float(rng.uniform(0.1, 0.5)),
        jitter=float(rng.uniform(0.025, 0.07)),
        seed=int(rng.integers(2**31)),
    )


def _smooth_noise(rng: np.random.Generator, n: int, corr: int) -> np.ndarray:
    """Zero-mean noise with roughly ``corr`` samples of correlation, unit std."""
    raw = rng.normal(0, 1, n + 2 * corr)
    k = np.hanning(2 * corr + 1)
    sm = np.convolve(raw, k / k.sum(), mode="same")[corr:corr + n]
    return sm / (sm.std() + 1e-6)


def render(signer: Signer, rng: np.random.Generator, forgery: bool = False,
           out_hw: tuple[int, int] = (192, 384), margin: float = 0.02) -> np.ndarray:
    """One signature of ``signer`` (a skilled forgery of it with ``forgery``) as a uint8 canvas."""
    jitter = signer.jitter * (1.0 if not forgery else rng.uniform(1.8, 3.0))
    slant = signer.slant + (rng.normal(0, 0.04) if not forgery else rng.normal(0, 0.15))
    x_scale = np.exp(rng.normal(0, 0.04 if not forgery else 0.1))
    slope = signer.slope + rng.normal(0, 1.5)
    pressure_rng = np.random.default_rng(signer.seed)  # a writer's pressure habit repeats
    paths = []
    for stroke in signer.strokes:
        pts = stroke + rng.normal(0, jitter, stroke.shape).astype(np.float32)
        if forgery:  # proportions drift as the copyist goes along
            drift = np.cumsum(rng.normal(0, 0.03, len(pts)))
            pts[:, 0] = pts[:, 0] * (1 + drift * 0.5)
        dense = catmull_rom(pts, per_segment=10)
        n = len(dense)
        if forgery:  # tremor: slow, careful drawing shakes
            amp = rng.uniform(0.01, 0.035)
            dense = dense + np.stack([_smooth_noise(rng, n, 2), _smooth_noise(rng, n, 2)], 1) * amp
        habit = _smooth_noise(pressure_rng, n, 12) * signer.pressure_var
        if forgery:  # even pressure, blunt ends, slightly heavier line
            pressure = 1.0 + 0.3 * habit * rng.uniform(0.2, 0.6) + rng.uniform(0.0, 0.3)
        else:
            ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / max(2.0, 0.08 * n))
            pressure = (1.0 + habit + rng.normal(0, 0.05)) * (1 - signer.taper + signer.taper * ramp)
        paths.append((dense, np.clip(pressure, 0.15, 2.0)))
    theta = np.deg2rad(slope)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    drawn = []
    for dense, pressure in paths:
        q = dense.copy()
        q[:, 0] = (q[:, 0] + slant * q[:, 1]) * x_scale
        q = q @ rot.T
        q[:, 1] = -q[:, 1]  # image y goes down
        drawn.append((q * X_HEIGHT_PX, pressure))
    allpts = np.vstack([q for q, _ in drawn])
    lo = allpts.min(0) - 8 * signer.width * X_HEIGHT_PX - 4
    hi = allpts.max(0) + 8 * signer.width * X_HEIGHT_PX + 4
    h, w = int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1
    canvas = np.zeros((h, w), np.uint8)
    shift = 4  # sub-pixel drawing
    base = max(1.0, signer.width * X_HEIGHT_PX * (1.0 if not forgery else rng.uniform(1.0, 1.3)))
    ink = int(rng.integers(170, 256))
    for q, pressure in drawn:
        q = np.round((q - lo) * (1 << shift)).astype(np.int32)
        for i in range(len(q) - 1):
            thick = max(1, int(round(base * pressure[i])))
            level = int(min(255, ink * (0.75 + 0.25 * min(1.0, pressure[i]))))
            cv2.line(canvas, tuple(q[i]), tuple(q[i + 1]), level, thick, cv2.LINE_AA, shift)
    box = crop_to_ink(canvas > 20)
    if box is None:
        return np.zeros(out_hw, np.uint8)
    x0, y0, x1, y1 = box
    return fit_to_canvas(canvas[y0:y1, x0:x1], out_hw[0], out_hw[1], margin)


@dataclass
class SyntheticSet:
    """Rendered synthetic signers: canvases plus who drew each and whether it is forged."""

    canvases: np.ndarray  # (N, H, W) uint8
    signer: np.ndarray  # (N,) int, the identity imitated or written
    forged: np.ndarray  # (N,) bool

    def labels(self) -> np.ndarray:
        """Training classes: each signer's genuines, and its forgeries as a class of their own."""
        return self.signer * 2 + self.forged.astype(np.int64)

    def groups(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """signer -> (genuine indices, forgery indices), for the skilled ranking loss."""
        out = {}
        for s in np.unique(self.signer):
            idx = np.flatnonzero(self.signer == s)
            gen, forg = idx[~self.forged[idx]], idx[self.forged[idx]]
            if len(gen) >= 2 and len(forg):
                out[int(s)] = (gen, forg)
        return out


def make_synthetic_set(n_signers: int, genuine: int = 8, forgeries: int = 3, seed: int = 0,
                       out_hw: tuple[int, int] = (192, 384), cache_dir: Path | None = None) -> SyntheticSet:
    """Render ``n_signers`` identities (deterministic in ``seed``), cached on disk when asked."""
    key = hashlib.sha256(repr((n_signers, genuine, forgeries, seed, out_hw, _version())).encode()).hexdigest()[:16]
    cache = cache_dir / f"synthetic_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        z = np.load(cache)
        return SyntheticSet(z["canvases"], z["signer"], z["forged"])
    n = n_signers * (genuine + forgeries)
    canv = np.zeros((n, *out_hw), np.uint8)
    signer_ids = np.repeat(np.arange(n_signers), genuine + forgeries)
    forged = np.tile(np.r_[np.zeros(genuine, bool), np.ones(forgeries, bool)], n_signers)
    rng = np.random.default_rng(seed)
    k = 0
    for s in range(n_signers):
        who = random_signer(rng)
        for f in forged[k:k + genuine + forgeries]:
            canv[k] = render(who, rng, forgery=bool(f), out_hw=out_hw)
            k += 1
        if s % 500 == 0:
            log.info("synthetic signers: %d/%d", s, n_signers)
    out = SyntheticSet(canv, signer_ids, forged)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, canvases=canv, signer=signer_ids, forged=forged)
    return out


def _version() -> str:
    """Changes to this file's drawing invalidate cached renders."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
