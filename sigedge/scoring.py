"""Scores of a query embedding against a writer's enrolled reference embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Fusion", "WriterNormalisation", "cosine_similarities", "fuse_scores", "l2_normalize",
           "reference_agreement"]

Fusion = Literal["mean", "max", "top2"]


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def cosine_similarities(query: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Cosine of an L2-normalised query (D,) with each L2-normalised reference (R, D)."""
    return references @ query


def fuse_scores(similarities: np.ndarray, fusion: Fusion = "mean") -> float:
    """One score from the similarities to several references.

    ``mean`` is the most stable with few references (one odd reference moves it least);
    ``max`` suits writers with several signature styles; ``top2`` is between the two.
    """
    s = np.asarray(similarities, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no references to score against")
    if fusion == "mean":
        return float(s.mean())
    if fusion == "max":
        return float(s.max())
    if fusion == "top2":
        return float(np.sort(s)[-2:].mean())
    raise ValueError(f"unknown fusion {fusion!r}")


def reference_agreement(references: np.ndarray) -> float | None:
    """Mean cosine between a writer's references, pair by pair (None with fewer than two).

    A writer who signs the same way every time has references that agree closely; a query
    must then come as close to count as genuine. A writer who varies needs more leeway.
    """
    r = np.asarray(references, dtype=np.float64)
    n = len(r)
    if n < 2:
        return None
    gram = r @ r.T
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


@dataclass(frozen=True)
class WriterNormalisation:
    """Per-writer normalisation of a fused score by the agreement of the writer's references.

    ``score = fused - strength * (agreement - centre)``: a writer whose references agree
    more than the typical writer (``centre``) must be matched more closely. ``strength`` is
    fitted by ``export/scoring.py`` (a logistic regression on the fused cosine and the
    agreement, genuine against skilled and random impostors, on writers the embedder never
    saw), and is stated in a bundle's manifest; the packaged bundle states none yet. With one
    reference there is no agreement to measure and the fused score is kept.
    """

    strength: float
    centre: float

    @classmethod
    def from_manifest(cls, block: dict | None) -> "WriterNormalisation | None":
        if not block:
            return None
        return cls(strength=float(block["strength"]), centre=float(block["centre"]))

    def apply(self, fused: float, agreement: float | None) -> float:
        if agreement is None:
            return float(fused)
        return float(fused - self.strength * (agreement - self.centre))
