"""Scores of a query embedding against a writer's enrolled reference embeddings."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import ModelError, NoSignatureError
from .hinge import HingeSpec, hinge_distances

__all__ = ["Fusion", "HingeSpec", "INK_STATISTICS", "LearnedScorer", "ScorerBackground", "StripSpec", "WriterNormalisation",
           "cosine_similarities", "fuse_many", "fuse_scores", "ink_statistics", "ink_width", "l2_normalize",
           "reference_agreement", "reference_features", "scorer_features", "split_ink", "split_strips",
           "strip_distances"]

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


def fuse_many(similarities: np.ndarray, fusion: Fusion = "mean") -> np.ndarray:
    """:func:`fuse_scores` of each row of an (N, R) similarity matrix."""
    s = np.asarray(similarities, dtype=np.float64)
    if fusion == "mean":
        return s.mean(axis=1)
    if fusion == "max":
        return s.max(axis=1)
    if fusion == "top2":
        return np.sort(s, axis=1)[:, -2:].mean(axis=1)
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


#: What :func:`ink_statistics` measures of a normalised canvas, in order (all logarithms, so
#: that the distance of two signatures in each is an absolute difference).
INK_STATISTICS = ("log_aspect", "log_ink_fraction", "log_stroke_width", "log_components")


@dataclass(frozen=True)
class StripSpec:
    """Embeddings of overlapping vertical strips of a signature, for the learned scorer.

    The ink box is cut into ``count`` evenly spaced strips, each ``span`` of its width (two:
    the left and the right 60 %), and each strip is normalised and embedded alone, as a whole
    signature is. A forger who gets the whole shape right gets its parts less right; the
    whole signature's embedding, squeezed into 128 x 256 pixels, sees them coarsely. The
    scorer weighs one minus the cosine of each strip's embedding to the references' same
    strip. ``dim`` is the embedder's: the manifest states it so that a bundle's contract is
    read, not guessed (model card, "Strip embeddings").
    """

    count: int = 2
    span: float = 0.6
    dim: int = 128

    def __post_init__(self) -> None:
        if self.count < 1 or not 0.0 < self.span <= 1.0 or self.dim < 1:
            raise ModelError(f"strip embeddings need at least one strip, a span in (0, 1] and a dimension, not {self}")

    @property
    def size(self) -> int:
        """Values of one signature's strip embeddings: ``count`` embeddings of ``dim``."""
        return self.count * self.dim

    def to_manifest(self) -> dict:
        return {"count": self.count, "span": self.span, "dim": self.dim,
                "distance": "one minus the cosine of each strip's embedding"}

    @classmethod
    def from_manifest(cls, block: dict | None) -> "StripSpec | None":
        if not block:
            return None
        try:
            return cls(count=int(block["count"]), span=float(block["span"]), dim=int(block["dim"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the manifest's strip embeddings are malformed ({exc!r})") from None


def strip_distances(a: np.ndarray, b: np.ndarray, spec: StripSpec) -> np.ndarray:
    """One minus the cosine of each strip's (unit-length) embedding, (..., spec.count), between
    strip embeddings (..., spec.size) that broadcast."""
    a = np.asarray(a, np.float64).reshape(*np.shape(a)[:-1], spec.count, spec.dim)
    b = np.asarray(b, np.float64).reshape(*np.shape(b)[:-1], spec.count, spec.dim)
    return 1.0 - np.sum(a * b, axis=-1)


def ink_width(hinge: HingeSpec | None, strips: StripSpec | None = None) -> int:
    """Values of a signature's ink vector: the :data:`INK_STATISTICS`, then the contour hinge
    where there is one, then the strip embeddings where there are some."""
    return len(INK_STATISTICS) + (hinge.size if hinge is not None else 0) + (strips.size if strips is not None else 0)


def split_strips(ink: np.ndarray, hinge: HingeSpec | None, strips: StripSpec | None) -> np.ndarray | None:
    """The strip embeddings (N, strips.size) of ink vectors (N, K), or None without them."""
    if strips is None:
        return None
    return np.atleast_2d(ink)[:, ink_width(hinge):ink_width(hinge, strips)]


def split_ink(ink: np.ndarray, statistics: tuple[str, ...], hinge: HingeSpec | None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Ink vectors (N, K) split into the chosen ``statistics`` (N, S) and the contour hinge
    (N, hinge.size), or None without one."""
    ink = np.atleast_2d(ink)
    stats = ink[:, [INK_STATISTICS.index(s) for s in statistics]]
    n = len(INK_STATISTICS)
    return stats, (ink[:, n:ink_width(hinge)] if hinge is not None else None)


def ink_statistics(canvas: np.ndarray) -> np.ndarray:
    """Four global shape statistics of a normalised canvas (paper 0, ink 1), float32 (4,).

    The log of the ink's width over its height, of the fraction of the canvas that is ink,
    of the mean stroke width (ink pixels over edge pixels) and of the number of connected
    regions (background included). Forgers copy a signature's look slowly and carefully;
    these change with it (wider or narrower, thicker strokes, more pen lifts) where the
    embedding, trained on identities, is least sensitive.
    """
    import cv2  # the runtime depends on OpenCV anyway; kept local so scoring imports light

    ink = np.asarray(canvas) > 0.05
    ys, xs = np.nonzero(ink)
    if len(xs) == 0:  # e.g. hair-thin strokes on a huge crop, averaged away by the downscaling
        raise NoSignatureError("no ink left on the normalised canvas to measure")
    mask = ink.astype(np.uint8)
    regions, _ = cv2.connectedComponents(mask)
    edges = int(np.count_nonzero(cv2.Canny(mask * 255, 50, 150))) + 1
    return np.array([np.log((np.ptp(xs) + 1) / (np.ptp(ys) + 1)), np.log(ink.mean()),
                     np.log(ink.sum() / edges), np.log(regions)], dtype=np.float32)


def _f32_to_text(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _f32_from_text(text: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<f4")
    if a.size != int(np.prod(shape)):
        raise ValueError(f"{a.size} values where {shape} were expected")
    return a.reshape(shape).astype(np.float64)


@dataclass(frozen=True, eq=False)
class ScorerBackground:
    """Other writers' embeddings, summarised for :class:`LearnedScorer`'s direction feature.

    From a population of writers (the embedder's training writers, never the validation
    ones): their mean embedding, a whitening by their within-writer covariance, and their
    mean after it. A writer's references define a direction in the whitened space, from the
    population's mean to theirs; how far a query lies along it, next to how far the
    references themselves do, says how much of what sets this writer apart from others the
    query has. As a score alone it took the 4-fold mean SigComp skilled EER from 23.6 % (the
    cosine) to 19.1 % (model card, ``benchmarks/writer_models.py``).
    """

    mean: np.ndarray           # (D,) the population's mean embedding
    whiten: np.ndarray         # (D, D) inverse square root of the within-writer covariance
    whitened_mean: np.ndarray  # (D,) the population's mean after :meth:`whitened`
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = len(self.mean)
        if self.whiten.shape != (d, d) or self.whitened_mean.shape != (d,):
            raise ModelError(f"a scorer background of dimension {d} needs a ({d}, {d}) whitening and a ({d},) "
                             f"whitened mean, not {self.whiten.shape} and {self.whitened_mean.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.whiten).all()
                and np.isfinite(self.whitened_mean).all()):
            raise ModelError("the scorer background holds non-finite values")

    def whitened(self, x: np.ndarray) -> np.ndarray:
        """Centred on the population, unit length, whitened, unit length again (rows)."""
        c = np.atleast_2d(np.asarray(x, np.float64)) - self.mean
        c /= np.linalg.norm(c, axis=1, keepdims=True) + 1e-12
        w = c @ self.whiten
        return w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-12)

    def projections(self, query_emb: np.ndarray, ref_emb: np.ndarray) -> tuple[np.ndarray, float]:
        """The queries' projections (N,) on the references' direction, and the references'
        own mean projection on it."""
        wr = self.whitened(ref_emb)
        direction = wr.mean(axis=0) - self.whitened_mean
        direction /= np.linalg.norm(direction) + 1e-12
        return self.whitened(query_emb) @ direction, float((wr @ direction).mean())

    def to_manifest(self) -> dict:
        return {"dim": len(self.mean), "encoding": "base64 of little-endian float32, row-major",
                "mean": _f32_to_text(self.mean), "whiten": _f32_to_text(self.whiten),
                "whitened_mean": _f32_to_text(self.whitened_mean), **self.info}

    @classmethod
    def from_manifest(cls, block: dict) -> "ScorerBackground":
        try:
            d = int(block["dim"])
            return cls(mean=_f32_from_text(block["mean"], (d,)), whiten=_f32_from_text(block["whiten"], (d, d)),
                       whitened_mean=_f32_from_text(block["whitened_mean"], (d,)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the manifest's scorer background is malformed ({exc!r})") from None


def _pair_features(query_emb: np.ndarray, query_ink: np.ndarray, ref_emb: np.ndarray,
                   ref_ink: np.ndarray) -> np.ndarray:
    """(N, 1 + S): the cosine and the ink-statistic distances of each query to the
    references, each averaged over the references."""
    cos = (query_emb @ ref_emb.T).mean(axis=1, keepdims=True)
    dist = np.abs(query_ink[:, None, :] - ref_ink[None, :, :]).mean(axis=1)
    return np.hstack([cos, dist])


def reference_features(ref_emb: np.ndarray, ref_ink: np.ndarray) -> np.ndarray | None:
    """The same features among a writer's references, pair by pair, averaged (None with one)."""
    n = len(ref_emb)
    if n < 2:
        return None
    i, j = np.triu_indices(n, k=1)
    cos = np.einsum("pd,pd->p", ref_emb[i], ref_emb[j]).mean()
    dist = np.abs(ref_ink[i] - ref_ink[j]).mean(axis=0)
    return np.r_[cos, dist]


def scorer_features(query_emb: np.ndarray, query_ink: np.ndarray, ref_emb: np.ndarray, ref_ink: np.ndarray,
                    own_default: np.ndarray | None = None, background: ScorerBackground | None = None,
                    query_hinge: np.ndarray | None = None, ref_hinge: np.ndarray | None = None,
                    hinge: HingeSpec | None = None, query_strips: np.ndarray | None = None,
                    ref_strips: np.ndarray | None = None, strips: StripSpec | None = None) -> np.ndarray:
    """(N, 2 * F) features of N queries (rows of ``query_emb``) against one writer's
    references: what :class:`LearnedScorer` weighs. F is 1 + S (the cosine and S ink
    statistics), plus 1 with a ``background`` (the projection on the references' direction),
    plus one a fragment length with a ``hinge`` (the mean chi-square distance of the query's
    contour-hinge histograms, ``query_hinge`` (N, hinge.size), to the references',
    ``ref_hinge``), plus one a strip with ``strips`` (one minus the mean cosine of each strip's
    embedding, ``query_strips`` (N, strips.size), to the references' same strip,
    ``ref_strips``). ``own_default`` stands in for the references' own features when there is
    only one reference."""
    q_emb = np.atleast_2d(np.asarray(query_emb, np.float32))
    q_ink = np.atleast_2d(np.asarray(query_ink, np.float32))
    r_emb, r_ink = np.atleast_2d(np.asarray(ref_emb, np.float32)), np.atleast_2d(np.asarray(ref_ink, np.float32))
    pair = _pair_features(q_emb, q_ink, r_emb, r_ink)
    own = reference_features(r_emb, r_ink)
    if background is not None:
        proj, own_proj = background.projections(q_emb, r_emb)
        pair = np.hstack([pair, proj[:, None]])
        own = None if own is None else np.r_[own, own_proj]
    for spec, q, r, distances, what in ((hinge, query_hinge, ref_hinge, hinge_distances, "contour hinge"),
                                        (strips, query_strips, ref_strips, strip_distances, "strip embeddings")):
        if spec is None:
            continue
        if q is None or r is None:
            raise ValueError(f"a scorer with a {what} needs the query's and the references' {what}")
        q, r = np.atleast_2d(q), np.atleast_2d(r)
        pair = np.hstack([pair, distances(q[:, None, :], r[None, :, :], spec).mean(axis=1)])
        if own is not None:
            i, j = np.triu_indices(len(r), k=1)
            own = np.r_[own, distances(r[i], r[j], spec).mean(axis=0)]
    if own is None:
        if own_default is None:
            raise ValueError("one reference: the references' own features need a default")
        own = np.asarray(own_default, dtype=np.float64)
    return np.hstack([pair, pair - own[None, :]]).astype(np.float64)


@dataclass(frozen=True)
class LearnedScorer:
    """A writer-independent logistic regression over compact features of a (query, references) trial.

    Features: the mean cosine of the query to the references and the mean distances of some
    of its :func:`ink_statistics` (``statistics``, names from :data:`INK_STATISTICS`) to
    theirs; and each of those minus the same quantity among the references themselves (how
    much further the query is from the references than they are from each other: a
    per-writer normalisation the regression weighs); with a ``background``, the query's
    projection on its references' direction away from other writers; with a ``hinge``, the
    chi-square distances of the query's contour-hinge histograms (:mod:`sigedge.hinge`) to
    the references'; with ``strips``, how far each strip's embedding is from the references'
    (:class:`StripSpec`). A signature's ink vector is then its :func:`ink_statistics` followed by
    its :func:`sigedge.hinge.contour_hinge` and its strip embeddings (:attr:`width` values). The score is the regression's
    probability that the query is genuine, in [0, 1]. The weights are fitted by
    ``export/fit_scorer.py`` on the embedder's training writers, then rescaled (one slope and
    one offset) on validation writers, which the embedder never saw, so that the probability
    means what it says on new writers (genuine and impostor trials weighed alike); the
    manifest states them.
    With one reference, the "among themselves" part is ``own_default``: the validation
    writers' mean, which ``export/fit_scorer.py`` states (a new writer's references agree
    less than the embedder's training writers' do).
    """

    coef: tuple[float, ...]
    intercept: float
    own_default: tuple[float, ...]
    statistics: tuple[str, ...] = INK_STATISTICS
    background: ScorerBackground | None = None
    hinge: HingeSpec | None = None
    strips: StripSpec | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.statistics if s not in INK_STATISTICS]
        if unknown:
            raise ModelError(f"the scorer uses ink statistics {unknown} this runtime does not measure "
                             f"(it measures {list(INK_STATISTICS)})")
        n = (1 + len(self.statistics) + (self.background is not None)
             + (len(self.hinge.fragments) if self.hinge is not None else 0)
             + (self.strips.count if self.strips is not None else 0))
        if len(self.coef) != 2 * n or len(self.own_default) != n:
            what = (f"{len(self.statistics)} ink statistics" + (", a background" if self.background else "")
                    + (", a contour hinge" if self.hinge else "") + (", strip embeddings" if self.strips else ""))
            raise ModelError(f"a scorer over {what} needs {2 * n} weights and {n} "
                             f"defaults, not {len(self.coef)} and {len(self.own_default)}")

    @classmethod
    def from_manifest(cls, block: dict | None) -> "LearnedScorer | None":
        if not block:
            return None
        if block.get("kind", "logistic") != "logistic":
            raise ModelError(f"the manifest's scorer is of kind {block.get('kind')!r}; this runtime knows 'logistic'")
        try:
            background = block.get("background")
            return cls(coef=tuple(float(c) for c in block["coef"]), intercept=float(block["intercept"]),
                       own_default=tuple(float(c) for c in block["own_default"]),
                       statistics=tuple(str(s) for s in block["ink_statistics"]),
                       background=None if background is None else ScorerBackground.from_manifest(background),
                       hinge=HingeSpec.from_manifest(block.get("hinge")),
                       strips=StripSpec.from_manifest(block.get("strips")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the manifest's verification.scorer is malformed ({exc!r})") from None

    @property
    def columns(self) -> list[int]:
        """Where the scorer's statistics are among :data:`INK_STATISTICS`."""
        return [INK_STATISTICS.index(s) for s in self.statistics]

    @property
    def width(self) -> int:
        """Values of a signature's ink vector the scorer reads: the ink statistics, then the
        contour hinge and the strip embeddings when it has them."""
        return ink_width(self.hinge, self.strips)

    def decision_many(self, query_emb: np.ndarray, query_ink: np.ndarray, ref_emb: np.ndarray,
                      ref_ink: np.ndarray) -> np.ndarray:
        """The regression's linear decision (log-odds) for each of N queries against one
        writer's references (ink vectors of :attr:`width` values: all of
        :data:`INK_STATISTICS`, as :func:`ink_statistics` gives them, then the contour hinge
        where the scorer has one)."""
        q_ink, r_ink = np.atleast_2d(query_ink), np.atleast_2d(ref_ink)
        if q_ink.shape[1] < self.width or r_ink.shape[1] < self.width:
            raise ValueError(f"the scorer reads {self.width} values of each signature's ink vector (ink statistics"
                             f"{', contour hinge' if self.hinge else ''}{', strip embeddings' if self.strips else ''}"
                             f"); got {q_ink.shape[1]} and {r_ink.shape[1]}")
        (q_stats, q_hinge), (r_stats, r_hinge) = (split_ink(q_ink, self.statistics, self.hinge),
                                                  split_ink(r_ink, self.statistics, self.hinge))
        x = scorer_features(query_emb, q_stats, ref_emb, r_stats, np.asarray(self.own_default), self.background,
                            q_hinge, r_hinge, self.hinge, split_strips(q_ink, self.hinge, self.strips),
                            split_strips(r_ink, self.hinge, self.strips), self.strips)
        return x @ np.asarray(self.coef) + self.intercept

    def score_many(self, query_emb: np.ndarray, query_ink: np.ndarray, ref_emb: np.ndarray,
                   ref_ink: np.ndarray) -> np.ndarray:
        """Genuine probability of each of N queries against one writer's references."""
        z = self.decision_many(query_emb, query_ink, ref_emb, ref_ink)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def score(self, query_emb: np.ndarray, query_ink: np.ndarray, ref_emb: np.ndarray, ref_ink: np.ndarray) -> float:
        return float(self.score_many(query_emb, query_ink, ref_emb, ref_ink)[0])
