"""A picture that explains a verification: query and closest reference after
normalisation, an overlay of where their ink differs, and the score on the threshold scale."""

from __future__ import annotations

import cv2
import numpy as np

from .pipeline import VerifyResult

__all__ = ["explain_image"]

_RED = (40, 40, 220)
_BLUE = (200, 90, 20)


def _ink_on_white(canvas: np.ndarray) -> np.ndarray:
    g = (255 - np.round(canvas * 255)).astype(np.uint8)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def _overlay(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Query-only ink red, reference-only ink blue, shared ink black."""
    q, r = query > 0.25, reference > 0.25
    out = np.full(query.shape + (3,), 255, np.uint8)
    out[q & ~r] = _RED
    out[r & ~q] = _BLUE
    out[q & r] = (0, 0, 0)
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def _score_bar(width: int, result: VerifyResult, thresholds: dict[str, float]) -> np.ndarray:
    h = 70
    bar = np.full((h, width, 3), 255, np.uint8)
    lo, hi = -0.2, 1.2  # a writer-normalised score can pass 1.0
    x = lambda s: int(round((np.clip(s, lo, hi) - lo) / (hi - lo) * (width - 20))) + 10  # noqa: E731
    cv2.rectangle(bar, (10, 30), (width - 10, 40), (220, 220, 220), -1)
    cv2.rectangle(bar, (x(result.threshold), 30), (width - 10, 40), (170, 230, 170), -1)  # accept zone
    for name, t in thresholds.items():
        cv2.line(bar, (x(t), 26), (x(t), 44), (120, 120, 120), 1)
    cv2.line(bar, (x(result.threshold), 22), (x(result.threshold), 48), (0, 120, 0), 2)
    cv2.circle(bar, (x(result.score), 35), 6, (0, 0, 0) if result.genuine else _RED, -1)
    verdict = "GENUINE" if result.genuine else "REJECTED"
    cv2.putText(bar, f"{verdict}: score {result.score:.3f} vs threshold {result.threshold:.3f} ({result.operating_point})",
                (10, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, "grey ticks: calibrated thresholds; green: accept zone", (10, 62), cv2.FONT_HERSHEY_SIMPLEX,
                0.38, (90, 90, 90), 1, cv2.LINE_AA)
    return bar


def explain_image(query_canvas: np.ndarray, reference_canvas: np.ndarray, result: VerifyResult,
                  thresholds: dict[str, float] | None = None, scale: int = 2) -> np.ndarray:
    """BGR uint8 picture: query | closest reference | overlay, and the score bar below."""
    sep = np.full((query_canvas.shape[0] * scale + 22, 6, 3), 255, np.uint8)
    big = lambda im: cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)  # noqa: E731
    panels = [
        _label(big(_ink_on_white(query_canvas)), "query"),
        sep,
        _label(big(_ink_on_white(reference_canvas)),
               f"closest reference #{result.closest_reference} (cos {max(result.similarities):.3f})"),
        sep,
        _label(big(_overlay(query_canvas, reference_canvas)), "red: query only, blue: reference only"),
    ]
    top = np.hstack(panels)
    frame = np.vstack([top, _score_bar(top.shape[1], result, thresholds or {})])
    return cv2.copyMakeBorder(frame, 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=(255, 255, 255))
