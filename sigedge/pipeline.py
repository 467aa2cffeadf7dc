"""The sigedge pipeline: image -> clean -> normalise -> embed -> score."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .bundle import ModelBundle
from .clean import CleanOptions, clean_signature
from .detect import DetectOptions, Detection, Detector, crop, rescorer_roles
from .errors import ModelError, NoSignatureError, UsageError
from .imageio import ImageInput, load_image
from .interpreter import TFLiteModel
from .normalize import NormalizedSignature, normalize_signature
from .scoring import (Fusion, WriterNormalisation, cosine_similarities, fuse_scores, l2_normalize,
                      reference_agreement)

__all__ = ["Pipeline", "PipelineOptions", "VerifyResult", "PageSignature"]

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
    #: How signatures are found on whole pages (:meth:`Pipeline.detect`).
    detect_options: DetectOptions = field(default_factory=DetectOptions)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 verification."""

    #: fused cosine similarity, normalised per writer when the bundle says so (see
    #: ``reference_agreement``); higher = more likely genuine
    score: float
    threshold: float
    genuine: bool  # score >= threshold
    similarities: tuple[float, ...]  # to each reference, in the order given
    closest_reference: int  # index of the most similar reference
    operating_point: str  # which calibrated threshold was used ("custom" if given)
    model_sha256: str
    #: ``accept``, ``refer`` (a person should look) or ``reject``, from the bundle's
    #: calibrated band; without a band, ``accept``/``reject`` as ``genuine``.
    band: str = ""
    #: mean cosine among the references; with the bundle's writer normalisation, the score is
    #: the fused cosine minus ``strength * (agreement - centre)``. None with one reference.
    reference_agreement: float | None = None
    #: whether ``score`` is normalised by the agreement (the bundle states a normalisation)
    writer_normalised: bool = False


@dataclass(frozen=True)
class PageSignature:
    """A signature found on a page, with its crop and (when asked) its verification."""

    detection: Detection
    crop: np.ndarray = field(repr=False)
    result: VerifyResult | None = None


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
        #: per-writer normalisation the thresholds were calibrated with (None: plain fused cosine)
        self.normalisation = WriterNormalisation.from_manifest(ver.get("writer_normalisation"))
        if self.normalisation is not None and self.fusion != ver.get("fusion", "mean"):
            # its strength was fitted for the bundle's fusion; with another, neither it nor the
            # thresholds are calibrated, and the plain fused score is at least what it says it is
            log.warning("fusion %r is not the bundle's %r: scores are not normalised per writer, and the "
                        "calibrated thresholds do not apply to them", self.fusion, ver.get("fusion", "mean"))
            self.normalisation = None
        self.threshold, self.operating_point = self._pick_threshold(ver)
        self._detector: Detector | None = None
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
        references = np.asarray(references, np.float32)
        sims = cosine_similarities(np.asarray(query, np.float32), references)
        score = fuse_scores(sims, self.fusion)
        agreement = reference_agreement(references)
        if self.normalisation is not None:
            score = self.normalisation.apply(score, agreement)
        return VerifyResult(
            score=score,
            threshold=self.threshold,
            genuine=score >= self.threshold,
            similarities=tuple(float(s) for s in sims),
            closest_reference=int(np.argmax(sims)),
            operating_point=self.operating_point,
            model_sha256=self.model_sha256,
            band=self.band(score),
            reference_agreement=agreement,
            writer_normalised=self.normalisation is not None and agreement is not None,
        )

    def band(self, score: float) -> str:
        """``accept`` / ``refer`` / ``reject`` for a score, by the bundle's calibrated band."""
        band = self.bundle.verification.get("band")
        if not band:
            return "accept" if score >= self.threshold else "reject"
        if score >= float(band["accept"]):
            return "accept"
        return "reject" if score < float(band["reject"]) else "refer"

    # ------------------------------------------------------------------ whole pages
    @property
    def detector(self) -> Detector:
        """The bundle's signature detector (loaded on first use)."""
        if self._detector is None:
            role = "detector" if self.options.precision == "int8" else "detector_float"
            spec = self.bundle.model(role)
            # the detector's manifest entry names its rescorers (of the same precision), if any
            rescorers = [self.bundle.model(role) for role in rescorer_roles(spec.raw)]
            self._detector = Detector(spec, threads=self.options.threads, options=self.options.detect_options,
                                      rescorers=rescorers)
        return self._detector

    def detect(self, page: ImageInput, score_threshold: float | None = None) -> list[Detection]:
        """Signatures on a whole page: boxes ``(x0, y0, x1, y1)`` in its pixels, best score first."""
        return self.detector.detect(load_image(page), score_threshold)

    def signatures_on_page(self, page: ImageInput, score_threshold: float | None = None) -> list[PageSignature]:
        """Every signature found on a page, cropped (with a little context) from the page."""
        img = load_image(page)
        pad = self.options.detect_options.crop_padding
        return [PageSignature(d, crop(img, d, pad, isolate=True)) for d in self.detector.detect(img, score_threshold)]

    def verify_page(self, page: ImageInput, references: Sequence[ImageInput]) -> list[PageSignature]:
        """Detect every signature on ``page`` and verify each against the references.

        Raises :class:`NoSignatureError` when the page has no signature above the
        detector's threshold, so that "no signature" is never read as "rejected".
        """
        if isinstance(references, (str, bytes, Path, np.ndarray)):
            references = [references]
        if len(references) == 0:
            raise UsageError("verify needs at least one reference signature")
        found = self.signatures_on_page(page)
        if not found:
            raise NoSignatureError(f"{_name(page)}: no signature found on the page")
        refs = self.embed_many(references)
        out = []
        for sig in found:
            try:
                result = self.verify_embeddings(self.embed(sig.crop), refs)
            except NoSignatureError:  # a box with too little ink after cleaning
                result = None
            out.append(PageSignature(sig.detection, sig.crop, result))
        return out


def _name(source: ImageInput) -> str:
    return str(source) if isinstance(source, (str, Path)) else "page"
