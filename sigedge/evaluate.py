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

from .metrics import auc, check_resampling, equal_error_rate, frr_at_far, percentile_interval
from .scoring import Fusion, LearnedScorer, WriterNormalisation, fuse_many, reference_agreement

__all__ = ["ProtocolScores", "EvaluationReport", "protocol_scores", "report_from_scores", "stack_variants",
           "bootstrap_over_writers", "bootstrap_difference"]


@dataclass
class ProtocolScores:
    """The protocol's scores; ``*_claimed``: for each score, the index (into the sorted eligible
    writers) of the writer the query was scored against, for resampling by writer."""

    genuine: np.ndarray
    skilled: np.ndarray
    random: np.ndarray
    writers: int
    genuine_claimed: np.ndarray | None = None
    skilled_claimed: np.ndarray | None = None
    random_claimed: np.ndarray | None = None


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
    claimed: dict[str, list[int]] = {"genuine": [], "skilled": [], "random": []}
    for k_writer, w in enumerate(eligible):
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
        for name, rows in (("genuine", positives), ("skilled", skilled), ("random", randoms)):
            claimed[name] += [k_writer] * len(rows)
    return ProtocolScores(np.array(g_scores), np.array(s_scores), np.array(r_scores), len(eligible),
                          *(np.array(claimed[n], dtype=np.intp) for n in ("genuine", "skilled", "random")))


def _by_writer(ps: ProtocolScores) -> dict[str, list[np.ndarray]]:
    """Each kind of trial's scores, split by the writer they were claimed against."""
    if ps.genuine_claimed is None or ps.skilled_claimed is None or ps.random_claimed is None:
        raise ValueError("these scores do not record their claimed writers")
    return {name: [scores[claimed == w] for w in range(ps.writers)]
            for name, scores, claimed in (("genuine", ps.genuine, ps.genuine_claimed),
                                          ("skilled", ps.skilled, ps.skilled_claimed),
                                          ("random", ps.random, ps.random_claimed))}


def _resampled_eers(split: Sequence[tuple[dict[str, list[np.ndarray]], int]],
                    chosen: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Each kind of impostor's mean EER over the folds, with fold k's writers ``chosen[k]``
    (None where some fold drew no such trial, or no genuine one)."""
    per_fold: dict[str, list[float]] = {"skilled": [], "random": []}
    for (by_writer, _), picked in zip(split, chosen):
        drawn = {name: np.concatenate([parts[w] for w in picked]) for name, parts in by_writer.items()}
        for name in per_fold:
            if len(drawn["genuine"]) and len(drawn[name]):
                per_fold[name].append(equal_error_rate(drawn["genuine"], drawn[name])[0])
    return {name: float(np.mean(v)) if len(v) == len(split) else None for name, v in per_fold.items()}


def _intervals(values: dict[str, list[float]], skipped: dict[str, int], level: float, prefix: str = "eer") -> dict:
    out: dict = {}
    for name in ("skilled", "random"):
        out[f"{prefix}_{name}_interval"] = percentile_interval(values[name], level) if values[name] else None
        out[f"{prefix}_{name}_skipped"] = skipped[name]
    return out


def bootstrap_over_writers(folds: ProtocolScores | Sequence[ProtocolScores], resamples: int = 1000, seed: int = 0,
                           level: float = 0.95) -> dict:
    """How far the EERs could move with other writers like these: resample the claimed writers
    with replacement (each keeps all its genuine, skilled and random trials) and recompute.

    Given several folds' scores (writer-disjoint cross-validation), each fold's writers are
    resampled within the fold and the interval is that of the mean of the folds' EERs, the
    figure cross-validation reports. Writers, not trials, are resampled because a writer's
    trials are not independent of one another: with a dozen writers, one hard writer moves the
    EER by points. Resamples in which some fold draws no skilled trial (or no genuine or
    random one) are skipped and counted.

    What the intervals leave out: a random impostor trial is resampled with the writer it was
    claimed against, not with the writer who wrote it, so the random EER's interval is likely
    too narrow; percentile intervals from a dozen writers tend to be narrow too; and neither
    the reference draw nor the training run varies here (``--draws`` shows the former)."""
    folds = [folds] if isinstance(folds, ProtocolScores) else list(folds)
    if not folds:
        raise ValueError("no scores to resample")
    check_resampling(resamples, level)
    rng = np.random.default_rng(seed)
    split = [(_by_writer(ps), ps.writers) for ps in folds]
    eers: dict[str, list[float]] = {"skilled": [], "random": []}
    skipped = {"skilled": 0, "random": 0}
    for _ in range(resamples):
        drawn = _resampled_eers(split, [rng.integers(n, size=n) for _, n in split])
        for name, value in drawn.items():
            if value is None:
                skipped[name] += 1
            else:
                eers[name].append(value)
    return {"resamples": resamples, "seed": seed, "level": level, "unit": "writer", "folds": len(split),
            **_intervals(eers, skipped, level)}


def bootstrap_difference(folds: Sequence[ProtocolScores], baseline: Sequence[ProtocolScores], resamples: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict:
    """Is one way of scoring better than another on the same trials, beyond what other writers
    would change? Both are resampled with the same writers each time (a paired bootstrap), and
    the interval is that of ``folds``' mean EER minus ``baseline``'s: below zero, ``folds`` is
    better. ``folds[k]`` and ``baseline[k]`` must score the same trials of the same writers."""
    if len(folds) != len(baseline) or not folds:
        raise ValueError("need the same folds, at least one, scored both ways")
    for a, b in zip(folds, baseline):
        same = a.writers == b.writers and all(
            np.array_equal(getattr(a, f), getattr(b, f)) for f in ("genuine_claimed", "skilled_claimed", "random_claimed"))
        if not same:
            raise ValueError("the two ways of scoring do not hold the same trials")
    check_resampling(resamples, level)
    rng = np.random.default_rng(seed)
    split_a = [(_by_writer(ps), ps.writers) for ps in folds]
    split_b = [(_by_writer(ps), ps.writers) for ps in baseline]
    diffs: dict[str, list[float]] = {"skilled": [], "random": []}
    skipped = {"skilled": 0, "random": 0}
    better = {"skilled": 0, "random": 0}
    for _ in range(resamples):
        chosen = [rng.integers(n, size=n) for _, n in split_a]
        a, b = _resampled_eers(split_a, chosen), _resampled_eers(split_b, chosen)
        for name in diffs:
            if a[name] is None or b[name] is None:
                skipped[name] += 1
            else:
                diffs[name].append(a[name] - b[name])
                better[name] += a[name] < b[name]
    out = {"resamples": resamples, "seed": seed, "level": level, "unit": "writer", "folds": len(folds),
           **_intervals(diffs, skipped, level, prefix="difference")}
    for name in diffs:
        out[f"share_better_{name}"] = better[name] / len(diffs[name]) if diffs[name] else None
    return out


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
