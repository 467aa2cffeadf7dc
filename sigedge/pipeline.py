"""The sigedge pipeline: image -> clean -> normalise -> embed -> score."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .bundle import ModelBundle
from .clean import CleanOptions, clean_signature
from .errors import ModelError, UsageError
from .imageio import ImageInput, load_image
from .interpreter import TFLiteModel
from .normalize import NormalizedSignature, normalize_signature
from .scoring import Fusion, cosine_similarities, fuse_scores, l2_normalize

__all__ = ["Pipeline", "PipelineOptions", "VerifyResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """How a :class:`Pipeline` runs. Defaults suit a single-core edge device."""

    #: Interpreter threads per model.
    threads: int = 1
    #: ``int8`` runs the bundle's shipped embedder; ``float`` its float reference model.
    precision: Literal["int8", "float"] = "int8"
    #: Classic cleaning (ruled lines, box borders, specks) before normalisation.
    clean: bool = True
    clean_options: CleanOptions = field(default_factory=CleanOptions)
    #: How similarities to several references become one score.
    fusion: Fusion | None = None
    #: Decision threshold; None takes the bundle's calibrated default.
    threshold: float | None = None
    #: Name of a calibrated threshold in the manifest (e.g. ``far_skilled_1pct``).
    operating_point: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 verification."""

    score: float  # fused cosine similarity, higher = more likely genuine
    threshold: float
    genuine: bool  # score >= threshold
    similarities: tuple[float, ...]  # to each reference, in the order given
    closest_reference: int  # index of the most similar reference
    operating_point: str  # which calibrated threshold was used ("custom" if given)
    model_sha256: str


class Pipeline:
    """Loads a model bundle once and runs the verification steps.

    >>> pipe = Pipeline()                      # the bundled models
    >>> result = pipe.verify("query.png", ["ref1.png", "ref2.png"])
    >>> result.genuine, result.score
    """

    def __init__(self, bundle_dir: str | Path | None = None, options: PipelineOptions | None = None):
        self.options = options or PipelineOptions()
        self.bundle = ModelBundle.load(bundle_dir)
        role = "embedder" if self.options.precision == "int8" else "embedder_float"
        self.embedder_spec = self.bundle.model(role)
        self.normalize_options = self.bundle.normalize_options
        self._embedder = TFLiteModel(self.embedder_spec.file, threads=self.options.threads)
        expected = (1, self.embedder_spec.input_height, self.embedder_spec.input_width, self.embedder_spec.input_channels)
        if self._embedder.input_shape != expected:
            raise ModelError(f"{self.embedder_spec.file.name}: input shape {self._embedder.input_shape} "
                             f"does not match the manifest's {expected}")
        dim = self.embedder_spec.output_dim
        if dim and self._embedder.output_shape[-1] != dim:
            raise ModelError(f"{self.embedder_spec.file.name}: output dimension {self._embedder.output_shape[-1]} "
                             f"does not match the manifest's {dim}")
        ver = self.bundle.verification
        self.fusion: Fusion = self.options.fusion or ver.get("fusion", "mean")
        self.threshold, self.operating_point = self._pick_threshold(ver)
        log.debug("pipeline: %s (%s), threshold %.4f (%s)", self.embedder_spec.file.name,
                  self._embedder.backend, self.threshold, self.operating_point)

    def _pick_threshold(self, ver: dict) -> tuple[float, str]:
        if self.options.threshold is not None:
            return float(self.options.threshold), "custom"
        thresholds = ver.get("thresholds", {})
        name = self.options.operating_point or ver.get("default_threshold")
        if name not in thresholds:
            raise UsageError(f"operating point {name!r} is not in the bundle (has: {', '.join(thresholds) or 'none'})")
        return float(thresholds[name]), str(name)

    @property
    def model_sha256(self) -> str:
        return self.embedder_spec.sha256

    @property
    def dim(self) -> int:
        return int(self._embedder.output_shape[-1])

    @property
    def backend(self) -> str:
        return self._embedder.backend

    def prepare(self, image: ImageInput) -> NormalizedSignature:
        """Load, clean and normalise a cropped signature into the model's canvas."""
        img = load_image(image)
        if self.options.clean:
            img = clean_signature(img, self.options.clean_options)
        return normalize_signature(img, self.normalize_options)

    def embed_canvas(self, canvas: np.ndarray) -> np.ndarray:
        """Embedding of an already normalised canvas (float32 (H, W) in [0, 1])."""
        raw = self._embedder(canvas[..., None])
        return l2_normalize(raw) if self.embedder_spec.l2_normalize else raw

    def embed(self, image: ImageInput) -> np.ndarray:
        """L2-normalised float32 embedding (D,) of a cropped signature."""
        return self.embed_canvas(self.prepare(image).canvas)

    def embed_many(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Embeddings (N, D) of several cropped signatures, in order."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.embed(im) for im in images])

    def verify(self, query: ImageInput, references: Sequence[ImageInput]) -> VerifyResult:
        """Is ``query`` by the same writer as the ``references``? (1:1 verification)"""
        if isinstance(references, (str, bytes, Path, np.ndarray)):
            references = [references]
        if len(references) == 0:
            raise UsageError("verify needs at least one reference signature")
        return self.verify_embeddings(self.embed(query), self.embed_many(references))

    def verify_embeddings(self, query: np.ndarray, references: np.ndarray) -> VerifyResult:
        """Verification on precomputed embeddings (e.g. references stored in a gallery)."""
        sims = cosine_similarities(np.asarray(query, np.float32), np.asarray(references, np.float32))
        score = fuse_scores(sims, self.fusion)
        return VerifyResult(
            score=score,
            threshold=self.threshold,
            genuine=score >= self.threshold,
            similarities=tuple(float(s) for s in sims),
            closest_reference=int(np.argmax(sims)),
            operating_point=self.operating_point,
            model_sha256=self.model_sha256,
        )
