"""Scores of a query embedding against a writer's enrolled reference embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Fusion", "cosine_similarities", "fuse_scores", "l2_normalize"]

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
