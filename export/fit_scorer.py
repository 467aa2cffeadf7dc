"""Fit a bundle's learned scorer and recalibrate its thresholds (no TensorFlow).

    python -m export.fit_scorer                                    # the packaged bundle
    python -m export.fit_scorer --bundle runs/embedder-fold1/bundle --splits training/splits/fold1
    python -m export.fit_scorer --dry-run                          # fit and report, write nothing
    python -m export.fit_scorer --query-rotations 0                # calibrate a bundle that turns no query
    python -m export.fit_scorer --background                       # also weigh a background of other writers
    python -m export.fit_scorer --background --hinge \
        --cross-fit training/splits/fold1=runs/embedder-fold1/bundle \
        --cross-fit training/splits/fold2=runs/embedder-fold2/bundle \
        --cross-fit training/splits/fold3=runs/embedder-fold3/bundle    # the shipped scorer

Each validation query is scored at its best of the query rotations (``QUERY_ROTATIONS``,
-10, 0 and 10 degrees by default), as verification then scores it; the fit itself (step 2)
uses the upright training signatures.

The scorer (:class:`sigedge.scoring.LearnedScorer`) is a logistic regression over six
numbers of a (query, references) trial: the mean cosine of the query's embedding to the
references', the mean distances of two of its ink statistics (:func:`sigedge.scoring.ink_statistics`:
the ink's aspect ratio and its number of connected regions, both logarithms) to theirs, and
each of those three minus the same quantity among the references themselves.
``benchmarks/learned_scorer.py`` measured the idea first (its ``learned:int8+scalar`` row,
with all four statistics; ``STATISTICS`` below says why two).

1. Describes (cleans, normalises, embeds with the bundle's int8 embedder, measures the ink)
   the *training* writers of sigcomp2011_dutch and ssbi in ``--splits``: the writers the
   embedder was trained on, never the ones any number is reported on.
2. Builds protocol trials on them (5 references; three seeded draws; the rest of the writer's
   genuines against its skilled forgeries and at most 40 other writers' genuines a draw) and
   fits the regression (ridge 1 on standardised features, as the benchmark: the features
   are correlated), genuine trials weighing as much as all impostors.
3. Describes the *validation* writers of the three collections. On the embedder's training
   writers its cosines are higher than on any new writer, so the fitted probabilities are
   overconfident; a one-feature logistic regression of the validation trials' labels on the
   fitted log-odds (Platt scaling; genuine signatures against skilled forgeries, the case a
   decision is hard in; each collection, and within it the two kinds, weighed alike)
   rescales them: the score is then the probability that a query is genuine rather than a
   skilled forgery, at even odds. That moves no ranking, so no EER. Then scores them with the scorer
   and with the plain fused cosine, and calibrates each one's thresholds and accept / refer /
   reject band on them (as the export does). The report gives each EER for reference
   draw 0 (the draw ``sigedge evaluate`` uses) and its mean over ``--draws`` draws.
4. Rewrites ``manifest.json``: ``verification.scorer`` with the weights,
   ``verification.thresholds`` and ``band`` on the scorer's probability scale, and
   ``verification.cosine`` with the fused cosine's own (what references enrolled without ink
   statistics are scored with); ``identification.threshold`` stays on the cosine. Model files
   are untouched.

With ``--background`` the fit first summarises the genuine signatures of the *training*
writers of all three collections (:class:`sigedge.scoring.ScorerBackground`: their mean,
a whitening by their within-writer covariance, their whitened mean; stored in the manifest
as ``verification.scorer.background``) and the scorer gains one feature and its "minus the
references" twin: the query's projection on its references' direction away from those
writers (``benchmarks/writer_models.py`` measured the idea first).

With ``--hinge`` the pipeline also measures each signature's contour hinge
(:mod:`sigedge.hinge`, stated in the manifest as ``verification.scorer.hinge``) and the scorer
gains its chi-square distances to the references' at each fragment length, and their twins.

With ``--cross-fit SPLITS=BUNDLE`` (repeatable) step 1 changes: the regression is fitted on
the *validation* writers of other folds (``SPLITS``), each described by that fold's own bundle
(``BUNDLE``: its int8 embedder, which never saw them, and its scorer's background), instead
of on this bundle's training writers. The embedder has learned its training writers (their
skilled EER is near 0), so fitted on them the regression trusts the cosine far more than a
new writer deserves; fitted on writers new to their embedder it learns the weights that hold
for new writers (``benchmarks/crossfit_scorer.py`` measured it; model card, "Contour hinge
and a cross-fitted scorer"). Those writers must not be among ``--splits``' validation
writers, which steps 3 and 4 report and calibrate on.

Writing refuses a scorer that does worse than the plain cosine on the validation writers
(the mean change of every EER reported, each a mean over draws).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from export.scoring import (EVAL_REFERENCES, FIT_COLLECTIONS, SPLITS, _shown, bundle_arguments, embed_rows,
                            fit_logistic, read_split, trials)
from sigedge import Pipeline, PipelineOptions
from sigedge.cli_common import parse_rotations
from sigedge.errors import SigedgeError, UsageError
from sigedge.evaluate import protocol_scores, stack_variants
from sigedge.evaluate_cli import over_draws
from sigedge.hinge import HingeSpec
from sigedge.scoring import LearnedScorer, ScorerBackground, StripSpec, scorer_features, split_ink, split_strips

log = logging.getLogger("export.fit_scorer")
#: The ink statistics the shipped scorer uses: the geometric ones. Ink fraction and stroke
#: width depend on the pen and the medium as much as on the writer; with them the scorer
#: lost 1.7 to 4.4 points of random EER on the cross-media set (tablet against paper), which
#: the fit does not see (model card, "Scoring"; benchmarks/scorer_variants.py).
STATISTICS = ("log_aspect", "log_components")
#: Ridge penalty on standardised features (the benchmark's).
RIDGE = 1.0
#: Angles a query is also scored at (its best counts; references stay upright), and the
#: thresholds calibrated with. Over folds 0-3 the search cost upright signatures 0.2 points of
#: SigComp skilled EER (20.14 % against 19.95 %, mean of 10 draws a fold) and took the cost of
#: a ±15° turn from 2.2-5.6 points to at most 2.0 (model card, "Query rotations");
#: ``--query-rotations 0`` calibrates a bundle that turns no query.
QUERY_ROTATIONS = (-10.0, 0.0, 10.0)
#: Ridge of the background's within-writer covariance, as a share of its mean variance
#: (``--background``; the value ``benchmarks/writer_models.py`` measured with, not tuned).
BACKGROUND_SHRINK = 0.1


def feature_names(statistics: tuple[str, ...], background: bool = False, hinge: HingeSpec | None = None,
                  strips: StripSpec | None = None) -> list[str]:
    """Names of the scorer's features, in the order of its weights."""
    own = (["cosine", *statistics] + (["direction"] if background else [])
           + ([f"hinge{length}" for length in hinge.fragments] if hinge is not None else [])
           + ([f"strip{k + 1}" for k in range(strips.count)] if strips is not None else []))
    return own + [f"{n}-references" for n in own]


def fit_background(vectors: np.ndarray, writers: list[str], shrink: float = BACKGROUND_SHRINK) -> ScorerBackground:
    """:class:`ScorerBackground` of these embeddings (rows) of these writers: their mean, the
    whitening by their within-writer covariance of the centred, unit-length vectors (plus
    ``shrink`` times its mean variance on the diagonal), and their whitened mean."""
    vectors = np.asarray(vectors, np.float64)
    labels = np.asarray(writers)
    if len(set(writers)) < 2 or len(vectors) <= vectors.shape[1]:
        raise UsageError(f"a scorer background needs several writers and more signatures than the embedding has "
                         f"dimensions ({vectors.shape[1]}); got {len(vectors)} of {len(set(writers))} writer(s)")
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-12
    within = np.zeros((vectors.shape[1],) * 2)
    for w in np.unique(labels):
        d = centred[labels == w] - centred[labels == w].mean(axis=0)
        within += d.T @ d
    within /= len(vectors)
    within += shrink * np.trace(within) / len(within) * np.eye(len(within))
    vals, vecs = np.linalg.eigh(within)
    whiten = vecs @ np.diag(vals ** -0.5) @ vecs.T
    partial = ScorerBackground(mean=mean, whiten=whiten, whitened_mean=np.zeros_like(mean))
    return ScorerBackground(mean=mean, whiten=whiten, whitened_mean=partial.whitened(vectors).mean(axis=0),
                            info={"signatures": int(len(vectors)), "writers": int(len(set(writers))),
                                  "shrink": shrink})


def background_rows(splits: Path) -> list[tuple[Path, str, str]]:
    """The genuine signatures of the training writers of every collection (writer ids made
    unique across collections): the embedder's own writers, never a validation one."""
    return [(path, f"{c}/{writer}", kind) for c in EVAL_REFERENCES
            for path, writer, kind in read_split(splits / f"{c}_train.csv") if kind == "genuine"]


def describe_rows(pipe: Pipeline, rows: list[tuple[Path, str, str]]
                  ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Embeddings, ink statistics, writers and kinds of the usable rows (no ink: left out)."""
    emb, ink, writers, kinds = [], [], [], []
    for path, writer, kind in rows:
        try:
            f = pipe.describe(path)
        except SigedgeError as exc:
            log.warning("skipped %s: %s", path, exc)
            continue
        emb.append(f.embedding)
        ink.append(f.ink)
        writers.append(writer)
        kinds.append(kind)
    if not emb:
        raise UsageError("no usable image in the split")
    return np.stack(emb), np.stack(ink), writers, kinds


def describe_queries(pipe: Pipeline, rows: list[tuple[Path, str, str]]
                     ) -> tuple[tuple[np.ndarray, np.ndarray, list[str], list[str]], list]:
    """As :func:`describe_rows` (the upright images, as references are enrolled), and each
    image as a query at every one of the pipeline's query rotations: (embeddings, ink) a
    rotation, the ``query_variants`` of :func:`sigedge.evaluate.protocol_scores`."""
    described, writers, kinds = [], [], []
    for path, writer, kind in rows:
        try:
            described.append(pipe.describe_query(path))
        except SigedgeError as exc:
            log.warning("skipped %s: %s", path, exc)
            continue
        writers.append(writer)
        kinds.append(kind)
    if not described:
        raise UsageError("no usable image in the split")
    upright = pipe.query_rotations.index(0.0)
    variants = stack_variants(described)
    return (variants[upright][0], variants[upright][1], writers, kinds), variants


def scorer_trials(emb: np.ndarray, ink: np.ndarray, writers: list[str], kinds: list[str], refs: int, seed: int,
                  statistics: tuple[str, ...] = STATISTICS, background: ScorerBackground | None = None,
                  hinge: HingeSpec | None = None, strips: StripSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trial features (N, 2 * F; :func:`sigedge.scoring.scorer_features`) and kinds, with the
    draws of :func:`export.scoring.trials` (``ink``: the pipeline's ink vectors, the contour
    hinge after the ink statistics where ``hinge`` is given, then the strip embeddings where
    ``strips`` is)."""
    stats, hist = split_ink(ink, statistics, hinge)
    parts = split_strips(ink, hinge, strips)

    def features(chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return scorer_features(emb[rows], stats[rows], emb[chosen], stats[chosen], background=background,
                               query_hinge=None if hist is None else hist[rows],
                               ref_hinge=None if hist is None else hist[chosen], hinge=hinge,
                               query_strips=None if parts is None else parts[rows],
                               ref_strips=None if parts is None else parts[chosen], strips=strips)

    x, kind, _ = trials(emb, writers, kinds, refs, seed, features=features)
    return x, kind


def fit_scorer(sets: list[tuple[np.ndarray, np.ndarray, list[str], list[str]]], refs: list[int],
               draws: int = 3, statistics: tuple[str, ...] = STATISTICS,
               background: ScorerBackground | None = None, hinge: HingeSpec | None = None,
               set_backgrounds: list[ScorerBackground | None] | None = None,
               collections: list[str] | None = None, strips: StripSpec | None = None) -> tuple[LearnedScorer, dict]:
    """The scorer fitted on the trials of the given described sets (pooled), with ``refs[i]``
    references a writer in set ``i``. ``background`` is the scorer's; set ``i``'s trials are
    projected on ``set_backgrounds[i]`` where given (a set described by another fold's
    embedder needs that fold's background), else on ``background``. ``collections`` names
    each set's collection (default: each set its own): sets of one collection (the same
    collection described in several folds) weigh together as one."""
    backgrounds = set_backgrounds if set_backgrounds is not None else [background] * len(sets)
    parts = [[scorer_trials(*s, r, 1000 + d, statistics, b, hinge, strips) for d in range(draws)]
             for s, r, b in zip(sets, refs, backgrounds)]
    x = np.vstack([p[0] for per_set in parts for p in per_set])
    kind = np.concatenate([p[1] for per_set in parts for p in per_set])
    if not (kind == "genuine").any() or (kind == "genuine").all():
        raise UsageError("the fit needs genuine and impostor trials")
    # each collection weighs the same, whatever its number of trials (the cross-media set has
    # ten times more than the others, all of them random impostors); a collection's sets of
    # several folds count as one
    weight = set_weights([np.concatenate([p[1] for p in per_set]) for per_set in parts],
                         collections or [str(i) for i in range(len(sets))])
    coef, intercept = fit_logistic(x, (kind == "genuine").astype(float), weight, l2=RIDGE)
    n = x.shape[1] // 2
    # the query's cosine enters twice, as itself and in its "minus the references" twin: its
    # total weight is what must be positive (one of the two alone may go negative when the
    # other carries it, as the twins are correlated)
    if coef[0] + coef[n] <= 0:
        raise SigedgeError("the fitted weight of the query's cosine is not positive; refusing the scorer")
    own = x[:, :n] - x[:, n:]  # the references' own features, trial by trial (fit_bundle replaces
    # this default by the validation writers' own: training writers' references agree more)
    scorer = LearnedScorer(coef=tuple(float(c) for c in coef), intercept=float(intercept),
                           own_default=tuple(float(v) for v in own.mean(axis=0)), statistics=statistics,
                           background=background, hinge=hinge, strips=strips)
    info = {"trials": int(len(kind)), "trials_by_kind": {k: int((kind == k).sum()) for k in ("genuine", "skilled", "random")}}
    return scorer, info


class _LogOdds:
    """A scorer's log-odds in place of its probability, for :func:`protocol_scores`."""

    def __init__(self, scorer: LearnedScorer):
        self.score_many = scorer.decision_many


def rescale(scorer: LearnedScorer, val: dict[str, tuple[np.ndarray, np.ndarray, list[str], list[str]]],
            variants: dict[str, list] | None = None) -> tuple[LearnedScorer, tuple[float, float]]:
    """The scorer with its log-odds rescaled (slope, offset) to the genuine and skilled trials of
    reference draw 0 of the ``val`` collections that have skilled forgeries, each query scored
    at its best rotation (``variants``, as :func:`describe_queries` gives them); each
    collection, and within it each kind, weighs alike."""
    z, kind = [], []
    for coll, (emb, ink, writers, kinds) in val.items():
        ps = protocol_scores(emb, writers, kinds, EVAL_REFERENCES[coll], seed=0, scorer=_LogOdds(scorer), ink=ink,
                             query_variants=(variants or {}).get(coll))
        if not len(ps.skilled):
            continue
        kind.append(np.array(["genuine"] * len(ps.genuine) + ["skilled"] * len(ps.skilled)))
        z.append(np.concatenate([ps.genuine, ps.skilled]))
    if not z:
        raise UsageError("rescaling needs validation writers with skilled forgeries")
    kind_all = np.concatenate(kind)
    # genuine against skilled alike within a collection, each collection alike
    weight = np.concatenate([np.where(k == "genuine", 0.5 / (k == "genuine").sum(), 0.5 / (k == "skilled").sum())
                             for k in kind]) * len(kind_all) / len(kind)
    (slope,), offset = fit_logistic(np.concatenate(z)[:, None], (kind_all == "genuine").astype(float), weight,
                                    l2=1e-3)
    if slope <= 0:
        raise SigedgeError("the fitted log-odds do not rank the validation writers' genuines first; refusing the scorer")
    return replace(scorer, coef=tuple(float(slope) * c for c in scorer.coef),
                   intercept=float(slope * scorer.intercept + offset)), (float(slope), float(offset))


def set_weights(kinds: list[np.ndarray], collections: list[str]) -> np.ndarray:
    """:func:`collection_weights` of sets of trials (their kinds, in order), the sets of one
    collection pooled, returned in the order of the sets."""
    groups = list(dict.fromkeys(collections))
    members = [[i for i, c in enumerate(collections) if c == g] for g in groups]
    pooled = collection_weights([np.concatenate([kinds[i] for i in m]) for m in members])
    out: list[np.ndarray] = [np.empty(0)] * len(kinds)
    start = 0
    for m in members:
        for i in m:
            out[i] = pooled[start:start + len(kinds[i])]
            start += len(kinds[i])
    return np.concatenate(out)


def collection_weights(kinds: list[np.ndarray]) -> np.ndarray:
    """Trial weights for several collections' trials, concatenated: within a collection,
    genuine trials weigh as much as the impostors, shared equally by the kinds of impostor it
    has (skilled and random, or random alone); each collection's total the same, whatever its
    number of trials; all of them summing to the number of trials, so that the ridge penalty
    keeps its strength."""
    total = sum(len(k) for k in kinds)
    out = []
    for k in kinds:
        impostor_kinds = [c for c in ("skilled", "random") if (k == c).any()]
        w = np.where(k == "genuine", 0.5 / max((k == "genuine").sum(), 1), 0.0)
        for c in impostor_kinds:
            w[k == c] = 0.5 / len(impostor_kinds) / (k == c).sum()
        out.append(w * total / len(kinds))
    return np.concatenate(out)


def validation_own_features(scorer: LearnedScorer, val: dict) -> tuple[float, ...]:
    """The mean of the references' own features (cosine and statistic distances among a
    writer's references) over the trials of the validation writers of the collections with
    skilled forgeries, 5 references, draw 0 (a mean over trials, so writers with more trials
    weigh more): what a single reference stands in for. The embedder's
    training writers' own references agree more closely than a new writer's."""
    own = []
    for coll in FIT_COLLECTIONS:
        emb, ink, writers, kinds = val[coll]
        x, _ = scorer_trials(emb, ink, writers, kinds, EVAL_REFERENCES[coll], 0, scorer.statistics, scorer.background,
                             scorer.hinge, scorer.strips)
        n = x.shape[1] // 2
        own.append(x[:, :n] - x[:, n:])
    return tuple(float(v) for v in np.vstack(own).mean(axis=0))


def fit_bundle(bundle: Path | None, splits: Path = SPLITS, write: bool = True, draws: int = 10,
               command: str = "python -m export.fit_scorer",
               query_rotations: tuple[float, ...] = QUERY_ROTATIONS, background: bool = False,
               hinge: bool = False, cross_fit: list[tuple[Path, Path]] | None = None, strips: bool = False) -> dict:
    """Fit, report and (with ``write``) rewrite the bundle's verification block (with
    ``background``, the scorer also weighs the query's projection on its references' direction
    away from the training writers, :class:`sigedge.scoring.ScorerBackground`; with ``hinge``,
    the contour-hinge distances; with ``strips``, the distances of the strip embeddings
    (:class:`sigedge.scoring.StripSpec`); with ``cross_fit`` (split folder, bundle) pairs, it is fitted
    on those folds' validation writers, each described by its own fold's bundle)."""
    from export.export_embedder import calibrate, decision_band

    pipe = Pipeline(bundle, PipelineOptions(precision="int8", scorer="cosine", query_rotations=query_rotations))
    if pipe.fusion != "mean":
        raise UsageError(f"the scorer averages over the references; this bundle fuses by {pipe.fusion!r}")
    if pipe.bundle.verification.get("writer_normalisation"):
        raise UsageError("the bundle states a writer normalisation; a bundle is calibrated for one scorer")
    spec = HingeSpec() if hinge else None
    pipe.hinge = spec  # measured beside the ink statistics from here on
    strip_spec = StripSpec(dim=pipe.dim) if strips else None
    pipe.strips = strip_spec
    if cross_fit:
        fit_sets, set_backgrounds, fit_collections, fitted_on = _cross_fit_sets(splits, cross_fit, spec, background,
                                                                                strip_spec)
    else:
        fit_sets = [describe_rows(pipe, read_split(splits / f"{c}_train.csv")) for c in FIT_COLLECTIONS]
        set_backgrounds, fit_collections = None, None
        fitted_on = (f"the training writers of {' and '.join(FIT_COLLECTIONS)} in {_shown(splits)}, embedded by "
                     f"the int8 embedder {pipe.model_sha256[:12]}")
    population = None
    if background:
        vectors, writers, _ = embed_rows(pipe, background_rows(splits))
        population = fit_background(vectors, writers)
        population.info["fitted_on"] = (f"the genuine signatures of the training writers of {', '.join(EVAL_REFERENCES)} "
                                        f"in {_shown(splits)}")
        log.info("background: %d signatures of %d writers", len(vectors), len(set(writers)))
    scorer, info = fit_scorer(fit_sets, [EVAL_REFERENCES[c] for c in fit_collections or FIT_COLLECTIONS],
                              background=population, hinge=spec, set_backgrounds=set_backgrounds,
                              collections=fit_collections, strips=strip_spec)
    names = feature_names(scorer.statistics, population is not None, spec, strip_spec)
    log.info("scorer fitted on %d trials: weights %s, intercept %.3f", info["trials"],
             {n: round(c, 3) for n, c in zip(names, scorer.coef)}, scorer.intercept)
    val, variants = {}, {}
    for c in EVAL_REFERENCES:
        val[c], variants[c] = describe_queries(pipe, read_split(splits / f"{c}_val.csv"))
    scorer = replace(scorer, own_default=validation_own_features(scorer, val))
    scorer, platt = rescale(scorer, val, variants)
    log.info("rescaled on the validation writers: log-odds x %.3f %+.3f", *platt)
    report, learned_scores, cosine_scores, upright_scores = {}, {}, {}, {}
    for coll, refs in EVAL_REFERENCES.items():
        emb, ink, writers, kinds = val[coll]
        entry = {}
        # "cosine" and "learned" score as verification does (each query at its best rotation,
        # where there are several); "cosine_upright" and "learned_upright" the query as it is
        runs = [("cosine", None, variants[coll]), ("learned", scorer, variants[coll])]
        if len(pipe.query_rotations) > 1:
            runs += [("cosine_upright", None, None), ("learned_upright", scorer, None)]
        for name, s, v in runs:
            d = over_draws(emb, writers, kinds, refs, 0, draws, "mean", scorer=s, ink=ink, query_variants=v)
            entry[name] = {"eer_skilled": d["eer_skilled_per_draw"][0] if d["eer_skilled_per_draw"] else None,
                           "eer_random": d["eer_random_per_draw"][0],
                           "eer_skilled_mean_of_draws": d["eer_skilled_mean"],
                           "eer_random_mean_of_draws": d["eer_random_mean"]}
        learned_scores[coll] = protocol_scores(emb, writers, kinds, refs, seed=0, scorer=scorer, ink=ink,
                                               query_variants=variants[coll])
        cosine_scores[coll] = protocol_scores(emb, writers, kinds, refs, seed=0, query_variants=variants[coll])
        upright_scores[coll] = protocol_scores(emb, writers, kinds, refs, seed=0)
        report[coll] = entry
        log.info("%s (validation, %d references): %s", coll, refs, entry)
    gain = [report[c]["cosine"][f"eer_{k}_mean_of_draws"] - report[c]["learned"][f"eer_{k}_mean_of_draws"]
            for c in EVAL_REFERENCES for k in ("skilled", "random")
            if report[c]["cosine"][f"eer_{k}_mean_of_draws"] is not None]
    if write and float(np.mean(gain)) < 0:
        raise SigedgeError(f"the learned scorer does worse than the cosine on the validation writers (mean EER "
                           f"change {100 * float(np.mean(gain)):+.2f} points); the manifest is left alone")
    thresholds, cosine_thresholds = calibrate(learned_scores), calibrate(cosine_scores)
    default = pipe.bundle.verification.get("default_threshold", "eer_skilled")
    one_reference = {coll: {name: rates_at(val[coll], scorer=s, threshold=t[default], draws=draws,
                                           variants=variants[coll])
                            for name, s, t in (("cosine", None, cosine_thresholds), ("learned", scorer, thresholds))}
                     for coll in FIT_COLLECTIONS}
    log.info("one reference, at the %s thresholds: %s", default, one_reference)
    manifest_path = pipe.bundle.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    ver = manifest.setdefault("verification", {})
    calibrated_on = ("validation writers of " + ", ".join(EVAL_REFERENCES) + f" in {_shown(splits)} (writer-disjoint "
                     "from training), reference draw 0")
    if len(pipe.query_rotations) > 1:
        calibrated_on += f", each query at its best of the rotations {list(pipe.query_rotations)}"
    ver.update({
        "scorer": {
            "kind": "logistic", "features": names, "ink_statistics": list(scorer.statistics),
            "coef": list(scorer.coef), "intercept": scorer.intercept, "own_default": list(scorer.own_default),
            "score": "probability that the query is genuine: 1 / (1 + exp(-(coef . features + intercept)))",
            "method": f"weighted logistic regression (ridge {RIDGE} on standardised features), genuine against "
                      "skilled and random impostors, 5 references, 3 draws",
            "fitted_on": fitted_on,
            "rescaled": {"slope": platt[0], "offset": platt[1],
                         "on": "genuine against skilled trials of reference draw 0 of the validation writers "
                               "(Platt scaling of the fitted log-odds; coef and intercept above include it)"},
            "own_default_from": "the validation writers' references among themselves (5 references, draw 0)",
            "command": command, **info, "validation_eer": report, "validation_draws": draws,
            "one_reference_at_default_threshold": one_reference,
            **({"background": scorer.background.to_manifest()} if scorer.background is not None else {}),
            **({"hinge": scorer.hinge.to_manifest()} if scorer.hinge is not None else {}),
            **({"strips": scorer.strips.to_manifest()} if scorer.strips is not None else {}),
        },
        "thresholds": thresholds,
        "band": decision_band(thresholds),
        "default_threshold": default,
        "query_rotations": list(pipe.query_rotations),
        "calibrated_on": calibrated_on,
        "cosine": {"thresholds": cosine_thresholds, "band": decision_band(cosine_thresholds),
                   "default_threshold": default, "calibrated_on": calibrated_on,
                   "use": "references without ink statistics (galleries enrolled before them), --scorer cosine"},
    })
    manifest.setdefault("identification", {}).update({
        # identify turns no query: its threshold comes from the upright cosine
        "threshold": calibrate(upright_scores)["far_random_1pct"], "score": "fused cosine, query upright",
        "chosen_by": "random FAR 1 % on the validation writers of " + ", ".join(EVAL_REFERENCES)})
    if write:
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        log.info("rewrote %s", manifest_path)
    return ver


def _cross_fit_sets(splits: Path, cross_fit: list[tuple[Path, Path]], hinge: HingeSpec | None, background: bool,
                    strips: StripSpec | None = None) -> tuple[list, list, list[str], str]:
    """The described validation writers of other folds (each by its own fold's bundle), their
    backgrounds, collections, and a sentence saying so. Refuses a fold whose validation
    writers are also ``splits``' (those report and calibrate the scorer)."""
    reported = {path.resolve() for c in EVAL_REFERENCES if (splits / f"{c}_val.csv").exists()
                for path, _, _ in read_split(splits / f"{c}_val.csv")}
    sets, backgrounds, collections, shown = [], [], [], []
    for fold_splits, fold_bundle in cross_fit:
        fold_pipe = Pipeline(fold_bundle, PipelineOptions(precision="int8"))
        if background and (fold_pipe.scorer is None or fold_pipe.scorer.background is None):
            raise UsageError(f"{fold_bundle}: cross-fitting with a background needs each fold's bundle fitted with one "
                             f"(python -m export.fit_scorer --bundle {fold_bundle} --splits {fold_splits} --background)")
        if fold_pipe.dim != (strips.dim if strips is not None else fold_pipe.dim):
            raise UsageError(f"{fold_bundle}: its embedder has dimension {fold_pipe.dim}, the fitted bundle's "
                             f"{strips.dim}; cross-fit on bundles of the same embedder architecture")
        fold_pipe.hinge = hinge
        fold_pipe.strips = strips
        for c in FIT_COLLECTIONS:
            if not (fold_splits / f"{c}_val.csv").exists():
                raise UsageError(f"--cross-fit: no {c}_val.csv in {fold_splits}")
            rows = read_split(fold_splits / f"{c}_val.csv")
            overlap = reported & {path.resolve() for path, _, _ in rows}
            if overlap:
                raise UsageError(f"{fold_splits}: {len(overlap)} of its {c} validation images are validation images of "
                                 f"{_shown(splits)}, which the scorer is reported and calibrated on; cross-fit on "
                                 "other folds")
            sets.append(describe_rows(fold_pipe, rows))
            backgrounds.append(fold_pipe.scorer.background if background else None)
            collections.append(c)
        shown.append(f"{_shown(fold_splits)} (int8 embedder {fold_pipe.model_sha256[:12]})")
    return sets, backgrounds, collections, (
        f"the validation writers of {' and '.join(FIT_COLLECTIONS)} in " + ", ".join(shown) + ", each described "
        "by its own fold's bundle, whose embedder never saw them (cross-fitted)"
        + (", projected on that bundle's background" if background else ""))


def rates_at(described: tuple, scorer: LearnedScorer | None, threshold: float, draws: int, refs: int = 1,
             variants: list | None = None) -> dict:
    """FRR and skilled / random FAR at ``threshold`` with ``refs`` references, mean of ``draws``
    draws: the thresholds are calibrated with 5 references; this shows how they hold with one."""
    emb, ink, writers, kinds = described
    runs = [protocol_scores(emb, writers, kinds, refs, seed=d, scorer=scorer, ink=ink, query_variants=variants)
            for d in range(draws)]
    return {"frr": float(np.mean([np.mean(r.genuine < threshold) for r in runs])),
            "far_skilled": float(np.mean([np.mean(r.skilled >= threshold) for r in runs])),
            "far_random": float(np.mean([np.mean(r.random >= threshold) for r in runs])), "references": refs}


def main(argv=None) -> int:
    ap = bundle_arguments(__doc__)
    ap.add_argument("--query-rotations", default=",".join(f"{a:g}" for a in QUERY_ROTATIONS),
                    help="angles (degrees, comma-separated, with 0) a query is also scored at, its best counting; "
                         "the thresholds are calibrated so (default: %(default)s; 0 turns no query)")
    ap.add_argument("--hinge", action="store_true",
                    help="also weigh the contour hinge of the ink (sigedge.hinge; the manifest then states it)")
    ap.add_argument("--strips", action="store_true",
                    help="also weigh the embeddings of overlapping strips of the ink (sigedge.scoring.StripSpec; the "
                         "manifest then states them)")
    ap.add_argument("--cross-fit", action="append", default=[], metavar="SPLITS=BUNDLE",
                    help="fit on the validation writers of another fold (its split folder) described by that fold's "
                         "bundle, instead of on this bundle's training writers (repeatable)")
    ap.add_argument("--background", action="store_true",
                    help="also weigh the query's projection on its references' direction away from the training "
                         "writers (the bundle's manifest then carries their mean and whitening)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = " ".join(["python -m export.fit_scorer", *(sys.argv[1:] if argv is None else argv)])
    try:
        rotations = parse_rotations(args.query_rotations)  # as sigedge verify --query-rotations reads it
        cross_fit = [_splits_and_bundle(text) for text in args.cross_fit]
        ver = fit_bundle(args.bundle, args.splits, write=not args.dry_run, draws=args.draws, command=command,
                         query_rotations=rotations, background=args.background, hinge=args.hinge, strips=args.strips,
                         cross_fit=cross_fit)
    except SigedgeError as exc:  # a refused fit or bad input: one line, no traceback
        log.error("%s", exc)
        return 2 if isinstance(exc, UsageError) else 1
    print(json.dumps(ver["scorer"]["validation_eer"], indent=1))
    return 0


def _splits_and_bundle(text: str) -> tuple[Path, Path]:
    splits, sep, bundle = text.partition("=")
    if not sep or not splits or not bundle:
        raise UsageError(f"--cross-fit SPLITS=BUNDLE, not {text!r}")
    return Path(splits), Path(bundle)


if __name__ == "__main__":
    sys.exit(main())
