"""The writer-independent verification protocol, on precomputed embeddings.

For every writer with more than R genuine signatures: R genuine references are drawn
(seeded); the writer's other genuines are positives, its forgeries are skilled
negatives, and other writers' genuines are random negatives. A query's score is the
fusion of its cosine similarities to the R references, optionally normalised per writer by
the agreement of the writer's references (:class:`~sigedge.scoring.WriterNormalisation`), or
the bundle's learned scorer over the cosine and the ink statistics
(:class:`~sigedge.scoring.LearnedScorer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .metrics import auc, equal_error_rate, frr_at_far
from .scoring import Fusion, LearnedScorer, WriterNormalisation, fuse_many, reference_agreement

__all__ = ["ProtocolScores", "EvaluationReport", "protocol_scores", "report_from_scores", "stack_variants"]


@dataclass
class ProtocolScores:
    genuine: np.ndarray
    skilled: np.ndarray
    random: np.ndarray
    writers: int


@dataclass
class EvaluationReport:
    writers: int
    references: int
    n_genuine: int
    n_skilled: int
    n_random: int
    eer_skilled: float | None
    eer_random: float
    threshold_eer_random: float
    frr_at_far1_skilled: float | None
    frr_at_far10_skilled: float | None
    frr_at_far1_random: float
    frr_at_far10_random: float
    auc_skilled: float | None
    auc_random: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def protocol_scores(embeddings: np.ndarray, writers: list[str], kinds: list[str], references: int = 5,
                    seed: int = 0, fusion: Fusion = "mean", max_random_per_writer: int | None = None,
                    query_embeddings: np.ndarray | None = None,
                    normalisation: WriterNormalisation | Mapping[str, WriterNormalisation] | None = None,
                    scorer: LearnedScorer | None = None, ink: np.ndarray | None = None,
                    query_ink: np.ndarray | None = None,
                    query_variants: Sequence[tuple[np.ndarray, np.ndarray | None]] | None = None) -> ProtocolScores:
    """Scores of the protocol. ``query_embeddings`` (same rows, e.g. of perturbed images)
    are scored against references drawn from ``embeddings``; by default the same.
    ``normalisation`` applies the bundle's per-writer normalisation, as verification does (a
    mapping gives each claimed writer its own, e.g. one fitted without that writer).
    ``scorer`` scores with a learned scorer instead; it needs the ink statistics ``ink`` (and
    ``query_ink`` with ``query_embeddings``). The reference draws are the same either way.
    ``query_variants``: (embeddings, ink statistics) of every row's query described in several
    ways (e.g. turned by the pipeline's query rotations); a query's score is the best of them,
    as :meth:`sigedge.Pipeline.verify` scores it. It replaces ``query_embeddings``."""
    emb = np.asarray(embeddings, dtype=np.float32)
    queries = emb if query_embeddings is None else np.asarray(query_embeddings, dtype=np.float32)
    if query_variants is None:
        query_variants = [(queries, ink if query_embeddings is None else query_ink)]
    variants = [(np.asarray(e, dtype=np.float32), None if k is None else np.asarray(k, dtype=np.float32))
                for e, k in query_variants]
    if scorer is not None:
        if ink is None or any(k is None for _, k in variants):
            raise ValueError("a learned scorer needs the ink statistics of every image")
        ink = np.asarray(ink, dtype=np.float32)
    writers_arr = np.asarray(writers)
    kinds_arr = np.asarray(kinds)
    rng = np.random.default_rng(seed)
    genuine_idx = {w: np.flatnonzero((writers_arr == w) & (kinds_arr == "genuine")) for w in sorted(set(writers))}
    eligible = [w for w, idx in genuine_idx.items() if len(idx) > references]
    g_scores, s_scores, r_scores = [], [], []
    for w in eligible:
        idx = genuine_idx[w]
        refs = rng.choice(idx, size=references, replace=False)
        ref_emb = emb[refs]
        positives = np.setdiff1d(idx, refs)
        skilled = np.flatnonzero((writers_arr == w) & (kinds_arr == "forgery"))
        randoms = np.concatenate([genuine_idx[o] for o in eligible if o != w] or [np.array([], int)])
        if max_random_per_writer is not None and len(randoms) > max_random_per_writer:
            randoms = rng.choice(randoms, size=max_random_per_writer, replace=False)
        norm = normalisation[w] if isinstance(normalisation, Mapping) else normalisation
        agreement = reference_agreement(ref_emb) if norm else None

        def scores(q_emb: np.ndarray, q_ink: np.ndarray | None) -> np.ndarray:
            """Every row's score against this writer: (N,), all at once, the set is small."""
            if scorer is not None:
                return scorer.score_many(q_emb, q_ink, ref_emb, ink[refs])
            fused = fuse_many(q_emb @ ref_emb.T, fusion)
            return np.array([norm.apply(f, agreement) for f in fused]) if norm else fused

        best = np.max([scores(e, k) for e, k in variants], axis=0)
        g_scores += list(best[positives])
        s_scores += list(best[skilled])
        r_scores += list(best[randoms])
    return ProtocolScores(np.array(g_scores), np.array(s_scores), np.array(r_scores), len(eligible))


def stack_variants(described: Sequence[Sequence]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``query_variants`` for :func:`protocol_scores` from each image's
    :meth:`sigedge.Pipeline.describe_query` list: (embeddings, ink statistics) a rotation."""
    return [(np.stack([d[a].embedding for d in described]), np.stack([d[a].ink for d in described]))
            for a in range(len(described[0]))]


def report_from_scores(ps: ProtocolScores, references: int) -> EvaluationReport:
    if len(ps.genuine) == 0 or len(ps.random) == 0:
        raise ValueError("need at least two writers with more genuine signatures than references")
    has_skilled = len(ps.skilled) > 0
    eer_r, thr_r = equal_error_rate(ps.genuine, ps.random)
    return EvaluationReport(
        writers=ps.writers,
        references=references,
        n_genuine=len(ps.genuine),
        n_skilled=len(ps.skilled),
        n_random=len(ps.random),
        eer_skilled=equal_error_rate(ps.genuine, ps.skilled)[0] if has_skilled else None,
        eer_random=eer_r,
        threshold_eer_random=thr_r,
        frr_at_far1_skilled=frr_at_far(ps.genuine, ps.skilled, 0.01) if has_skilled else None,
        frr_at_far10_skilled=frr_at_far(ps.genuine, ps.skilled, 0.10) if has_skilled else None,
        frr_at_far1_random=frr_at_far(ps.genuine, ps.random, 0.01),
        frr_at_far10_random=frr_at_far(ps.genuine, ps.random, 0.10),
        auc_skilled=auc(ps.genuine, ps.skilled) if has_skilled else None,
        auc_random=auc(ps.genuine, ps.random),
    )
