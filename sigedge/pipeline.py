"""The sigedge pipeline: image -> clean -> normalise -> embed -> score."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .bundle import ModelBundle
from .clean import CleanOptions, LearnedCleaner, clean_signature
from .detect import DetectOptions, Detection, Detector, crop, rescorer_roles
from .errors import MissingCleanerError, ModelError, NoSignatureError, UsageError
from .hinge import HingeSpec, ink_hinge
from .imageio import ImageInput, load_image
from .interpreter import TFLiteModel
from .normalize import NormalizedSignature, ink_strips, normalize_signature, rotate_image
from .scoring import (INK_STATISTICS, Fusion, LearnedScorer, StripSpec, WriterNormalisation, cosine_similarities,
                      fuse_scores, ink_statistics, ink_width, l2_normalize, reference_agreement)

__all__ = ["Pipeline", "PipelineOptions", "VerifyResult", "PageSignature", "SignatureFeatures"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """How a :class:`Pipeline` runs. Defaults suit a single-core edge device."""

    #: Interpreter threads per model.
    threads: int = 1
    #: ``int8`` runs the bundle's shipped embedder; ``float`` its float reference model.
    precision: Literal["int8", "float"] = "int8"
    #: Cleaning before normalisation: the classic rules (ruled lines, box borders), and the
    #: bundle's learned cleaner as ``clean_options.method`` says.
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
    #: ``bundle`` scores with the bundle's learned scorer when it states one (the cosine
    #: and ink statistics, see :class:`~sigedge.scoring.LearnedScorer`); ``cosine`` with the
    #: fused cosine alone, on the bundle's cosine thresholds.
    scorer: Literal["bundle", "cosine"] = "bundle"
    #: Angles (degrees) at which a *query* is also described and scored, its score the best of
    #: them: a signature written or scanned at a slant still meets its references upright.
    #: None takes the bundle's (``verification.query_rotations``, which its thresholds are
    #: calibrated with); ``(0.0,)`` turns the search off. Must hold 0.
    query_rotations: tuple[float, ...] | None = None

    def with_cleaning(self, cleaning: str) -> "PipelineOptions":
        """These options, cleaning as a recorded :attr:`Pipeline.cleaning` says: ``none``,
        ``classic`` (or ``""``, what galleries made before the record hold), or
        ``learned:<sha12>:<gate>`` (learned cleaning with that gate; the bundle's cleaner is
        the one used, and a gallery warns if its sha256 is another). Raises ValueError for
        anything else."""
        if cleaning in ("", "classic"):
            return replace(self, clean=True, clean_options=replace(self.clean_options, method="classic"))
        if cleaning == "none":
            return replace(self, clean=False)
        parts = cleaning.split(":")
        if len(parts) == 3 and parts[0] == "learned":
            try:
                gate = float(parts[2])
            except ValueError:
                gate = -1.0
            if 0.0 <= gate <= 1.0:
                learned = replace(self.clean_options, method="learned", min_removed_share=gate)
                return replace(self, clean=True, clean_options=learned)
        raise ValueError(f"not a recorded cleaning: {cleaning!r} (none, classic or learned:<sha12>:<gate>)")


@dataclass(frozen=True)
class SignatureFeatures:
    """What verification needs of one signature: its embedding and its ink statistics."""

    embedding: np.ndarray  # float32 (D,), L2-normalised
    #: float32 (:attr:`Pipeline.ink_width`,): the four :func:`sigedge.scoring.ink_statistics`,
    #: then the :func:`sigedge.hinge.contour_hinge` and the strip embeddings
    #: (:class:`sigedge.scoring.StripSpec`) where the bundle's scorer weighs them
    ink: np.ndarray


@dataclass(frozen=True)
class _Calibration:
    """One score scale's decision threshold and accept / refer / reject band."""

    threshold: float
    operating_point: str
    band: dict | None

    def decide(self, score: float) -> str:
        if not self.band:
            return "accept" if score >= self.threshold else "reject"
        if score >= float(self.band["accept"]):
            return "accept"
        return "reject" if score < float(self.band["reject"]) else "refer"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 verification."""

    #: with the bundle's learned scorer (``scorer == "learned"``), the probability that the
    #: query is genuine, in [0, 1]; otherwise the fused cosine similarity, normalised per
    #: writer when the bundle says so (see ``reference_agreement``). Higher = more likely
    #: genuine; compare it with ``threshold``, which is on the same scale.
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
    #: ``learned`` (the bundle's scorer over the cosine and ink statistics) or ``cosine``
    scorer: str = "cosine"
    #: the fused cosine similarity, whichever scorer made ``score``
    cosine: float = float("nan")
    #: the angle (degrees) the query was turned by for its best score (see
    #: ``PipelineOptions.query_rotations``); ``similarities`` and ``cosine`` are at that angle
    query_rotation: float = 0.0


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
        if ver.get("scorer") and ver.get("writer_normalisation"):
            raise ModelError(f"{self.bundle.directory}: the manifest states both a learned scorer and a writer "
                             "normalisation; a bundle is calibrated for one of them")
        #: the learned scorer the thresholds are calibrated for (None: the fused cosine)
        self.scorer = LearnedScorer.from_manifest(ver.get("scorer")) if self.options.scorer == "bundle" else None
        #: the contour hinge measured of every signature after its ink statistics (None: none):
        #: the bundle's scorer's even when these options score by the cosine, so that a gallery
        #: enrolled through them holds what the bundle's scorer needs
        self.hinge = HingeSpec.from_manifest((ver.get("scorer") or {}).get("hinge"))
        #: the strips embedded after the hinge (None: none), as the bundle's scorer states them
        self.strips = StripSpec.from_manifest((ver.get("scorer") or {}).get("strips"))
        if self.strips is not None and self.strips.dim != self.dim:
            raise ModelError(f"{self.bundle.directory}: the scorer's strip embeddings have dimension "
                             f"{self.strips.dim}, the embedder {self.dim}")
        background = None if self.scorer is None else self.scorer.background
        if background is not None and len(background.mean) != self.dim:
            raise ModelError(f"{self.bundle.directory}: the scorer's background has dimension {len(background.mean)}, "
                             f"the embedder {self.dim}")
        #: per-writer normalisation the thresholds were calibrated with (None: plain fused cosine)
        self.normalisation = WriterNormalisation.from_manifest(ver.get("writer_normalisation"))
        if (self.normalisation is not None or self.scorer is not None) and self.fusion != ver.get("fusion", "mean"):
            # they were fitted for the bundle's fusion; with another, neither they nor the
            # thresholds are calibrated, and the plain fused score is at least what it says it is
            log.warning("fusion %r is not the bundle's %r: scores are plain fused cosines, not normalised "
                        "per writer nor learned, and the calibrated thresholds do not apply to them",
                        self.fusion, ver.get("fusion", "mean"))
            self.normalisation = self.scorer = None
        # a bundle with a scorer keeps the cosine's own calibration in ``verification.cosine``
        cosine_block = ver.get("cosine") if ver.get("scorer") else ver
        self._cosine_calibration = (self._calibration(cosine_block, custom=self.scorer is None)
                                    if cosine_block else None)
        primary = self._calibration(ver, custom=True) if self.scorer is not None else self._cosine_calibration
        if primary is None:
            raise ModelError(f"{self.bundle.directory}: the manifest has no thresholds for the fused cosine "
                             "(verification.cosine)")
        self._primary = primary
        self.threshold, self.operating_point = primary.threshold, primary.operating_point
        rotations = self.options.query_rotations
        #: angles a query is described at (see :attr:`PipelineOptions.query_rotations`)
        calibrated = self.bundle.query_rotations
        self.query_rotations: tuple[float, ...] = calibrated if rotations is None else tuple(float(a) for a in rotations)
        if 0.0 not in self.query_rotations:
            raise UsageError(f"query rotations {list(self.query_rotations)} must include 0")
        if set(self.query_rotations) != set(calibrated) and self.options.threshold is None:
            # a query's best of several angles scores higher than it would upright, genuine or not
            log.warning("query rotations %s are not the ones the bundle's thresholds were calibrated with (%s): "
                        "its calibrated thresholds do not hold for these scores", list(self.query_rotations),
                        list(calibrated))
        self._detector: Detector | None = None
        #: the bundle's learned cleaner, when the options ask for it (None: classic cleaning only)
        self.cleaner = self._load_cleaner()
        log.debug("pipeline: %s (%s), threshold %.4f (%s)", self.embedder_spec.file.name,
                  self._embedder.backend, self.threshold, self.operating_point)

    def _load_cleaner(self) -> LearnedCleaner | None:
        method = self.options.clean_options.method
        if not self.options.clean or method == "classic":
            return None
        role = "cleaner" if self.options.precision == "int8" else "cleaner_float"
        if role not in self.bundle.models:
            if method == "learned":
                raise MissingCleanerError(f"bundle {self.bundle.directory} has no {role!r} model, which learned "
                                          f"cleaning needs")
            return None
        return LearnedCleaner(self.bundle.models[role], threads=self.options.threads)

    def _calibration(self, block: dict, custom: bool) -> _Calibration:
        """The threshold and band of one scale; a custom threshold (options) applies only to
        the scale it is meant for, the one scores are normally made on (``custom``)."""
        if custom and self.options.threshold is not None:
            return _Calibration(float(self.options.threshold), "custom", None)
        thresholds = block.get("thresholds", {})
        name = self.options.operating_point or block.get("default_threshold")
        if name not in thresholds:
            raise UsageError(f"operating point {name!r} is not in the bundle (has: {', '.join(thresholds) or 'none'})")
        return _Calibration(float(thresholds[name]), str(name), block.get("band"))

    @property
    def model_sha256(self) -> str:
        return self.embedder_spec.sha256

    @property
    def cleaning(self) -> str:
        """How crops are cleaned before they are embedded, as galleries record it: ``none``,
        ``classic``, or ``learned:<first 12 of the cleaner's sha256>:<its gate>``."""
        if not self.options.clean:
            return "none"
        if self.cleaner is None:
            return "classic"
        gate = self.options.clean_options.min_removed_share
        gate = self.cleaner.min_removed_share if gate is None else gate
        return f"learned:{self.cleaner.spec.sha256[:12]}:{gate:g}"

    @property
    def dim(self) -> int:
        return int(self._embedder.output_shape[-1])

    @property
    def backend(self) -> str:
        return self._embedder.backend

    def prepare(self, image: ImageInput) -> NormalizedSignature:
        """Load, clean and normalise a cropped signature into the model's canvas."""
        return normalize_signature(self._cleaned(image), self.normalize_options)

    def _cleaned(self, image: ImageInput) -> np.ndarray:
        """The loaded image, cleaned when the options say so: what normalisation starts from."""
        img = load_image(image)
        return clean_signature(img, self.options.clean_options, self.cleaner) if self.options.clean else img

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

    def describe(self, image: ImageInput) -> SignatureFeatures:
        """Embedding and ink statistics of a cropped signature: what a gallery stores."""
        return self._features(self._cleaned(image))

    def describe_query(self, image: ImageInput) -> list[SignatureFeatures]:
        """A query's features at each of :attr:`query_rotations` (cleaned once, then turned and
        normalised), in that order: what :meth:`verify` scores, keeping the best."""
        img = self._cleaned(image)
        upright = self._features(img)
        out = []
        for angle in self.query_rotations:
            if angle == 0.0:
                out.append(upright)
                continue
            try:
                out.append(self._features(rotate_image(img, angle)))
            except NoSignatureError:  # ink lost to the turn's resampling: the upright one stands in
                out.append(upright)
        return out

    def query_canvas(self, image: ImageInput, angle: float = 0.0) -> np.ndarray:
        """The canvas a query is scored on when turned by ``angle`` (as :meth:`describe_query`
        makes it): for pictures of a result whose ``query_rotation`` is not 0."""
        img = self._cleaned(image)
        return normalize_signature(img if angle == 0.0 else rotate_image(img, angle), self.normalize_options).canvas

    @property
    def ink_width(self) -> int:
        """Values of a signature's ink vector (:attr:`SignatureFeatures.ink`): the ink
        statistics, then the contour hinge and the strip embeddings where the bundle's scorer
        weighs them."""
        return ink_width(self.hinge, self.strips)

    @property
    def ink_layout(self) -> str:
        """What an ink vector holds, as a gallery records it: ``statistics``, and the contour
        hinge's and the strips' settings where there are some. Vectors of two layouts of the same length are not
        comparable (another hinge height or stroke gives other histograms)."""
        layout = "statistics"
        if self.hinge is not None:
            h = self.hinge
            layout += f"+hinge:{h.stroke},{h.height},{'-'.join(str(f) for f in h.fragments)},{h.bins}"
        if self.strips is not None:  # the embedder's sha256 is the gallery's already
            layout += f"+strips:{self.strips.count},{self.strips.span:g}"
        return layout

    def _features(self, cleaned: np.ndarray) -> SignatureFeatures:
        normalized = normalize_signature(cleaned, self.normalize_options)
        canvas = normalized.canvas
        ink = ink_statistics(canvas)
        if self.hinge is not None:  # traced on the cleaned image's ink, not the coarse canvas
            ink = np.concatenate([ink, ink_hinge(normalized.ink_mask, self.hinge)])
        if self.strips is not None:
            ink = np.concatenate([ink, self.strip_embeddings(cleaned)])
        return SignatureFeatures(self.embed_canvas(canvas), ink)

    def strip_embeddings(self, cleaned: np.ndarray) -> np.ndarray:
        """float32 (strips.size,): the embeddings of the bundle's strips of a cleaned signature
        (:class:`sigedge.scoring.StripSpec`), each normalised and embedded as a whole signature is."""
        if self.strips is None:
            raise UsageError("the bundle's scorer states no strip embeddings")
        return np.concatenate([self.embed_canvas(normalize_signature(strip, self.normalize_options).canvas)
                               for strip in ink_strips(cleaned, self.strips.count, self.strips.span,
                                                       self.normalize_options)])

    def describe_many(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, D) and ink vectors (N, :attr:`ink_width`) of several cropped signatures."""
        feats = [self.describe(im) for im in images]
        return (np.stack([f.embedding for f in feats]) if feats else np.zeros((0, self.dim), np.float32),
                np.stack([f.ink for f in feats]) if feats else np.zeros((0, self.ink_width), np.float32))

    def verify(self, query: ImageInput, references: Sequence[ImageInput]) -> VerifyResult:
        """Is ``query`` by the same writer as the ``references``? (1:1 verification)"""
        if isinstance(references, (str, bytes, Path, np.ndarray)):
            references = [references]
        if len(references) == 0:
            raise UsageError("verify needs at least one reference signature")
        refs, ref_ink = self.describe_many(references)
        return self.verify_features(self.describe_query(query), refs, ref_ink)

    def verify_features(self, queries: Sequence[SignatureFeatures], references: np.ndarray,
                        reference_ink: np.ndarray | None = None) -> VerifyResult:
        """Verification of a query described at several angles (:meth:`describe_query`), in
        the order of :attr:`query_rotations`: the best-scoring angle's result. Without the
        references' ink statistics, by the cosine alone."""
        if len(queries) != len(self.query_rotations):
            raise UsageError(f"expected the query at {len(self.query_rotations)} rotations, got {len(queries)}")
        results = [self.verify_embeddings(q.embedding, references, None if reference_ink is None else q.ink,
                                          reference_ink) for q in queries]
        best = self.query_rotations.index(0.0)  # upright unless a turn scores strictly higher
        for k, r in enumerate(results):
            if r.score > results[best].score:
                best = k
        return replace(results[best], query_rotation=self.query_rotations[best])

    def verify_embeddings(self, query: np.ndarray, references: np.ndarray, query_ink: np.ndarray | None = None,
                          reference_ink: np.ndarray | None = None) -> VerifyResult:
        """Verification on precomputed embeddings (e.g. references stored in a gallery).

        With the ink vectors of the query and of every reference (as wide as the bundle's
        learned scorer reads, :attr:`LearnedScorer.width`), the scorer (when the bundle states
        one) makes the score; without them, the fused cosine does, on the cosine's own
        calibrated thresholds (references enrolled before a gallery kept ink statistics, or
        before the bundle's scorer weighed the contour hinge)."""
        references = np.asarray(references, np.float32)
        query = np.asarray(query, np.float32)
        sims = cosine_similarities(query, references)
        cosine = fuse_scores(sims, self.fusion)
        agreement = reference_agreement(references)
        if (query_ink is None) != (reference_ink is None):
            raise UsageError("give the ink statistics of the query and of the references, or neither")
        if query_ink is not None:
            query_ink, reference_ink = np.asarray(query_ink, np.float32), np.asarray(reference_ink, np.float32)
            width = query_ink.shape[0] if query_ink.ndim == 1 else -1
            if width < len(INK_STATISTICS) or reference_ink.shape != (len(references), width):
                raise UsageError(f"ink vectors of shape (K,) and ({len(references)}, K), K at least "
                                 f"{len(INK_STATISTICS)}, expected, got {query_ink.shape} and {reference_ink.shape}")
        learned = self.scorer is not None and query_ink is not None and query_ink.shape[0] >= self.scorer.width
        if learned:
            score, calibration = self.scorer.score(query, query_ink, references, reference_ink), self._primary
        else:
            score, calibration = cosine, self._cosine_calibration
            if self.scorer is not None and self.options.threshold is not None:
                raise UsageError("the custom threshold is on the learned scorer's scale, and these references "
                                 "have no ink statistics (or no contour hinge) to score with it (sigedge reindex, "
                                 "re-enrol them, or choose the cosine scorer)")
            if calibration is None:
                raise ModelError("these references have no ink statistics, and the bundle has no thresholds for "
                                 "the plain cosine (verification.cosine); re-enrol them")
            if self.normalisation is not None:
                score = self.normalisation.apply(score, agreement)
        return VerifyResult(
            score=float(score),
            threshold=calibration.threshold,
            genuine=score >= calibration.threshold,
            similarities=tuple(float(s) for s in sims),
            closest_reference=int(np.argmax(sims)),
            operating_point=calibration.operating_point,
            model_sha256=self.model_sha256,
            band=calibration.decide(score),
            reference_agreement=agreement,
            writer_normalised=not learned and self.normalisation is not None and agreement is not None,
            scorer="learned" if learned else "cosine",
            cosine=float(cosine),
        )

    def threshold_for(self, scorer: str) -> tuple[float, str]:
        """(threshold, operating point) on the scale of ``scorer`` (a ``VerifyResult.scorer``)."""
        calibration = self._primary if scorer == "learned" else self._cosine_calibration
        if calibration is None:
            raise ModelError("the bundle has no thresholds for the plain cosine (verification.cosine)")
        return calibration.threshold, calibration.operating_point

    def calibrated_thresholds(self, scorer: str) -> dict[str, float]:
        """Every calibrated threshold of the manifest on the scale of ``scorer``."""
        ver = self.bundle.verification
        block = ver if scorer == "learned" or not ver.get("scorer") else ver.get("cosine", {})
        return {k: float(v) for k, v in block.get("thresholds", {}).items()}

    def band(self, score: float) -> str:
        """``accept`` / ``refer`` / ``reject`` for a score on the pipeline's main scale
        (the learned scorer's where the bundle has one), by the bundle's calibrated band."""
        return self._primary.decide(score)

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
        refs, ref_ink = self.describe_many(references)
        out = []
        for sig in found:
            try:
                result = self.verify_features(self.describe_query(sig.crop), refs, ref_ink)
            except NoSignatureError:  # a box with too little ink after cleaning
                result = None
            out.append(PageSignature(sig.detection, sig.crop, result))
        return out


def _name(source: ImageInput) -> str:
    return str(source) if isinstance(source, (str, Path)) else "page"
