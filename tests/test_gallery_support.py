"""Shared pieces of the gallery tests: a deterministic stand-in embedder and image makers.

Ranking tests must not depend on how well the shipped model separates synthetic writers
(it was trained on real signatures, and it will be retrained), so they use
:class:`SketchEmbedder`: the real pipeline's loading,
cleaning and normalisation (so bad images fail exactly as in production), then a fixed
random projection of the blurred, downsampled ink canvas. Different synthetic writers
get clearly different embeddings, samples of one writer similar ones. The checks in this
file make sure that stays true, since the other gallery tests rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sigedge.pipeline import Pipeline, VerifyResult
from sigedge.scoring import cosine_similarities, fuse_scores
from tests.hostile import draw_signature

DIM = 128


@dataclass
class _Bundle:
    name: str = "sketch-test-embedder"
    version: str = "1"
    identification: dict = field(default_factory=lambda: {"threshold": SketchEmbedder.THRESHOLD})
    verification: dict = field(default_factory=lambda: {
        "fusion": "mean", "thresholds": {"far_random_1pct": SketchEmbedder.THRESHOLD}})


class SketchEmbedder:
    """Implements the gallery's :class:`~sigedge.gallery.Embedder` protocol for tests."""

    THRESHOLD = 0.76

    def __init__(self, pipeline: Pipeline | None = None, sha256: str = "sketch-embedder-v1", seed: int = 7):
        self.pipeline = pipeline or Pipeline()
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((32 * 64, DIM)))
        self._proj = q.astype(np.float32)  # orthonormal columns: keeps cosines close
        self.model_sha256 = sha256
        self.dim = DIM
        self.bundle = _Bundle()
        self.fusion = "mean"
        self.threshold = self.THRESHOLD
        self.calls = 0

    def embed(self, image) -> np.ndarray:
        self.calls += 1
        canvas = self.pipeline.prepare(image).canvas
        small = cv2.resize(cv2.GaussianBlur(canvas, (0, 0), 2.0), (64, 32), interpolation=cv2.INTER_AREA)
        v = (small.reshape(-1) - small.mean()) @ self._proj
        v = v - v.mean()
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def verify_embeddings(self, query: np.ndarray, references: np.ndarray) -> VerifyResult:
        sims = cosine_similarities(np.asarray(query, np.float32), np.asarray(references, np.float32))
        score = fuse_scores(sims, "mean")
        return VerifyResult(score=score, threshold=self.threshold, genuine=score >= self.threshold,
                            similarities=tuple(float(s) for s in sims), closest_reference=int(np.argmax(sims)),
                            operating_point="test", model_sha256=self.model_sha256)


def signature_png(path: Path, writer: int, sample: int) -> Path:
    """Write sample ``sample`` of synthetic writer ``writer`` as a PNG; returns the path."""
    ok, buf = cv2.imencode(".png", draw_signature(writer, sample))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def blank_png(path: Path) -> Path:
    ok, buf = cv2.imencode(".png", np.full((120, 300), 255, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_sketch_embedder_separates_synthetic_writers():
    emb = SketchEmbedder()
    writers = range(12)
    vecs = {w: np.stack([emb.embed(draw_signature(w, s)) for s in range(4)]) for w in writers}
    for w in writers:
        same = vecs[w] @ vecs[w].T
        intra = same[np.triu_indices(4, 1)].min()
        for o in writers:
            if o != w:
                inter = (vecs[w] @ vecs[o].T).max()
                assert intra > inter + 0.05, (w, o, intra, inter)
                assert inter < SketchEmbedder.THRESHOLD, (w, o, inter)
        assert intra >= SketchEmbedder.THRESHOLD, (w, intra)


def test_sketch_embedder_uses_the_real_image_checks(tmp_path):
    import pytest

    from sigedge.errors import NoSignatureError

    with pytest.raises(NoSignatureError):
        SketchEmbedder().embed(blank_png(tmp_path / "blank.png"))
