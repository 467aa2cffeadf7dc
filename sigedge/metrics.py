"""Verification metrics in numpy: ROC, EER, FRR at a target FAR, AUC.

Scores are similarities: higher means "more likely genuine".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RocCurve", "roc_curve", "equal_error_rate", "frr_at_far", "threshold_at_far", "auc", "percentile_interval",
           "check_resampling"]


@dataclass(frozen=True)
class RocCurve:
    """False-accept and false-reject rates at each candidate threshold (accept if score >= t)."""

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def roc_curve(genuine: np.ndarray, impostor: np.ndarray) -> RocCurve:
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(g) == 0 or len(i) == 0:
        raise ValueError("need at least one genuine and one impostor score")
    thresholds = np.unique(np.concatenate([g, i, [np.inf]]))
    # accept if score >= t: FAR = share of impostors >= t, FRR = share of genuines < t
    far = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)
    return RocCurve(thresholds=thresholds, far=far, frr=frr)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): the rate where FAR and FRR cross, interpolated between steps."""
    roc = roc_curve(genuine, impostor)
    diff = roc.far - roc.frr  # decreasing in threshold
    k = int(np.argmax(diff <= 0))
    if k == 0:
        return float((roc.far[0] + roc.frr[0]) / 2), float(roc.thresholds[0])
    # Interpolate between k-1 (far > frr) and k (far <= frr).
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    eer = (1 - w) * (roc.far[k - 1] + roc.frr[k - 1]) / 2 + w * (roc.far[k] + roc.frr[k]) / 2
    t0, t1 = roc.thresholds[k - 1], roc.thresholds[k]
    thr = t0 if not np.isfinite(t1) else (1 - w) * t0 + w * t1
    return float(eer), float(thr)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-accept rate is at most ``far``."""
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    n = len(i)
    allowed = int(np.floor(far * n))  # impostors that may be accepted
    if allowed >= n:
        return float(i[0])
    # Accept if score >= t; put t just above the (n - allowed)-th smallest impostor.
    return float(np.nextafter(i[n - allowed - 1], np.inf))


def frr_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    t = threshold_at_far(impostor, far)
    return float(np.mean(np.asarray(genuine) < t))


def auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine score beats an impostor score (ties count half)."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    allscores = np.concatenate([g, i])
    order = allscores.argsort(kind="mergesort")
    ranks = np.empty(len(allscores))
    sorted_scores = allscores[order]
    # average ranks for ties
    _, inv, counts = np.unique(sorted_scores, return_inverse=True, return_counts=True)
    cum = np.cumsum(counts)
    avg = cum - (counts - 1) / 2.0
    ranks[order] = avg[inv]
    rg = ranks[: len(g)].sum()
    return float((rg - len(g) * (len(g) + 1) / 2) / (len(g) * len(i)))


def percentile_interval(values: Sequence[float], level: float) -> tuple[float, float]:
    """The central ``level`` share of ``values``: a percentile bootstrap interval."""
    if len(values) == 0:
        raise ValueError("no values to take an interval of")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [tail, 100 - tail])
    return float(lo), float(hi)


def check_resampling(resamples: int, level: float) -> None:
    """Refuse a bootstrap that cannot give an interval (no resample, or a level outside (0, 1))."""
    if resamples < 1 or not 0 < level < 1:
        raise ValueError("need resamples >= 1 and 0 < level < 1")
