"""Which further descriptors would help the shipped, cross-fitted scorer? Candidates compared.

    python benchmarks/scorer_candidates.py describe --fold 0=sigedge/models/default \\
        --fold 1=runs/hinge/fold1 --fold 2=runs/hinge/fold2 --fold 3=runs/hinge/fold3
    python benchmarks/scorer_candidates.py compare --fold 0=… --fold 1=… --fold 2=… --fold 3=… \\
        --sets ,hinge_2_12,hinge_ink,width,topology,runs,darkness,nearest,halves,thirds,halves+nearest \\
        --out benchmarks/results/scorer-candidates.json
    python benchmarks/scorer_candidates.py describe --fold … --measure hinge_halves+hinge_thirds
    python benchmarks/scorer_candidates.py compare --fold … --sets ,hinge_halves,hinge_thirds \
        --out benchmarks/results/scorer-candidates-hinge-parts.json
    python benchmarks/scorer_candidates.py compare --fold … --sets "" --hinge-upright \
        --out benchmarks/results/scorer-candidates-hinge-upright.json
    python benchmarks/scorer_candidates.py describe --fold … --measure profiles
    python benchmarks/scorer_candidates.py compare --fold … --sets ,profiles \
        --out benchmarks/results/scorer-candidates-profiles.json
    python benchmarks/scorer_candidates.py describe --fold … --measure profiles_skeleton
    python benchmarks/scorer_candidates.py compare --fold … --sets profiles_skeleton \
        --out benchmarks/results/scorer-candidates-profiles-skeleton.json
    python benchmarks/scorer_candidates.py compare --fold … --sets profiles_skeleton --hinge-upright \
        --out benchmarks/results/scorer-candidates-profiles-skeleton-hinge-upright.json

(``runs/hinge/foldK``: fold K's bundle with a scorer cross-fitted as the shipped one, model
card, "Contour hinge and a cross-fitted scorer"; only its embedder, background and hinge
settings are read here.)

``describe`` measures, once, every validation image of each fold (SigComp, SSBI and the
cross-media set), with that fold's bundle: at each query angle (-10, 0, 10 degrees) its
embedding, its ink vector as the bundle's pipeline measures it (ink statistics, then the
contour hinge) and the candidate descriptors of :data:`CANDIDATES` (the shape ones traced as
the hinge is, on the ink box resized to 200 pixels high). It caches them in ``--cache``
(default ``runs/scorer-candidates``), one ``.npz`` a fold (``--measure`` adds a file with some
candidates only).

``compare`` then fits, for each fold K, the shipped scorer's features with and without each
candidate set exactly as ``python -m export.fit_scorer --hinge --background --cross-fit …``
fits them: on the other folds' SigComp and SSBI validation writers, each described by its own
fold's bundle and projected on its background (5 references, 3 draws, at most 40 random
impostors a writer, ridge 1, collection weights); and reports the EERs on fold K's own
validation writers, each query at its best angle (``search``, as verification scores) and
upright only, over ``--draws`` reference draws (and draw 0 alone), SigComp and SSBI with 5
references and every other writer as random impostors, the cross-media set's random EER with
2 references and at most 40 other identities. The rescaling ``fit_scorer`` adds changes no
EER. A candidate enters as the scorer's features do: its distance to the references (mean
over them), and the same minus the references' own distance among themselves. Histograms are
compared by chi-square, scalar statistics by their absolute difference, embeddings by one
minus their cosine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import split_dir  # noqa: E402
from query_rotations import fold_arguments  # noqa: E402

from export.fit_scorer import RIDGE, set_weights  # noqa: E402
from export.scoring import EVAL_REFERENCES, fit_logistic, read_split, trials  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.hinge import _ink_mask, chi_square_distances, hinge_distances, hinge_histograms, thin  # noqa: E402
from sigedge.metrics import equal_error_rate  # noqa: E402
from sigedge.normalize import find_ink, ink_strips, normalize_signature, rotate_image, to_gray  # noqa: E402
from sigedge.scoring import StripSpec, scorer_features, split_ink, strip_distances  # noqa: E402

log = logging.getLogger("scorer_candidates")
SEARCH = (-10.0, 0.0, 10.0)
UP = SEARCH.index(0.0)
COLLECTIONS = ("sigcomp2011_dutch", "ssbi", "cross_media_chinese")
FIT = ("sigcomp2011_dutch", "ssbi")
HEIGHT = 200
RUN_EDGES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 10 ** 6])

#: name -> (kind, groups): a "hist" candidate is ``groups`` histograms of equal length, compared
#: by chi-square each; a "stats" candidate is scalars compared by absolute difference each.
CANDIDATES = {
    "hinge_2_12": ("hist", 2),    # the skeleton's hinge at fragment lengths 2 and 12 (the shipped: 4, 8)
    "hinge_ink": ("hist", 2),     # the hinge of the ink's own outline, fragments 4 and 8
    "width": ("hist", 1),         # stroke width (twice the distance to paper) along the centre line
    "topology": ("stats", 3),     # centre-line length, its ends and its branch points
    "runs": ("hist", 2),          # lengths of the paper's runs between strokes, across and down
    "darkness": ("hist", 1),      # how dark the ink is (pen pressure), on the flattened gray
    "halves": ("emb", 2),         # the embeddings of the ink's left and right 60 %, each normalised alone
    # not a descriptor: the cosine and the hinge distances to the *nearest* reference, beside
    # the shipped means over the references (read from the shipped ink vector)
    "nearest": ("nearest", 0),
    "thirds": ("emb", 3),         # the embeddings of three strips of the ink, each half its width
    # the shipped hinge (skeleton, fragments 4 and 8) traced within strips of the ink box, as the
    # part embeddings cut it: where along the signature the pen turns, not only how often
    "hinge_halves": ("hist", 4),  # the left and the right 60 %
    "hinge_thirds": ("hist", 6),  # three strips, each half the width
    # elastic matching (2026-12-04): the ink's column profiles along its width (how much ink,
    # its top and its bottom edge, in PROFILE_BINS steps), compared by dynamic time warping
    # within a band. Natural variation stretches parts of a signature; a forger's copy gets
    # the proportions along it wrong, which warping cannot hide.
    "profiles": ("dtw", 3),
    # the same traced on the centre line redrawn three pixels wide, as the shipped hinge is, so
    # that a tablet's stroke width and a pen's do not read as a difference of shape
    "profiles_skeleton": ("dtw", 3),
}
#: Columns of the ``profiles`` candidate, and the warping band (in columns each way).
PROFILE_BINS, PROFILE_BAND = 64, 6
#: The strip hinges: name -> (strips, each strip's share of the ink box's width).
HINGE_PARTS = {"hinge_halves": (2, 0.6), "hinge_thirds": (3, 0.5)}
#: The part embeddings: name -> (strips, each strip's share of the ink box's width).
PARTS = {"halves": (2, 0.6), "thirds": (3, 0.5)}
#: The candidates :func:`candidates` measures (the others are read from what ships).
MEASURED = tuple(k for k, (kind, _) in CANDIDATES.items() if kind != "nearest")


def candidates(cleaned: np.ndarray, pipe: Pipeline, names: tuple[str, ...] = MEASURED) -> dict[str, np.ndarray]:
    """The named candidate descriptors of a cleaned signature (see :data:`CANDIDATES`)."""
    opts = pipe.normalize_options
    out = {}
    shape = {"hinge_2_12", "hinge_ink", "width", "topology", "runs", *HINGE_PARTS}
    profiles = {"profiles", "profiles_skeleton"}
    if set(names) & (shape | profiles):  # the ink's mask and centre line, traced once for all of them
        mask = _ink_mask(cleaned, HEIGHT, opts)
        skeleton = thin(mask)
        stroke = cv2.dilate(skeleton, np.ones((3, 3), np.uint8))
    if set(names) & profiles:
        out["profiles"] = column_profiles(mask, PROFILE_BINS)
        out["profiles_skeleton"] = column_profiles(stroke, PROFILE_BINS)
    if set(names) & shape:
        out.update({"hinge_2_12": hinge_histograms(stroke, (2, 12), 12),
                    "hinge_ink": hinge_histograms(mask, (4, 8), 12)})
        on = skeleton > 0
        length = max(int(on.sum()), 1)
        width = 2.0 * cv2.distanceTransform(mask, cv2.DIST_L2, 3)[on]
        out["width"] = _normalised(np.histogram(np.minimum(width, 15.5), bins=16, range=(0, 16))[0])
        neighbours = cv2.filter2D(skeleton.astype(np.float32), -1, np.ones((3, 3), np.float32),
                                  borderType=cv2.BORDER_CONSTANT) - 1
        ends, branches = int((on & (neighbours == 1)).sum()), int((on & (neighbours >= 3)).sum())
        out["topology"] = np.log([length / HEIGHT, (ends + 1) / length * HEIGHT, (branches + 1) / length * HEIGHT])
        out["runs"] = np.concatenate([_paper_runs(mask), _paper_runs(mask.T)])
        for name, (count, span) in HINGE_PARTS.items():
            out[name] = np.concatenate([hinge_histograms(np.ascontiguousarray(part), (4, 8), 12)
                                        for part in _column_strips(stroke, count, span)])
    flat, ink = find_ink(to_gray(cleaned), opts)
    darkness = 1.0 - flat[ink > 0].astype(np.float64) / 255.0
    out["darkness"] = _normalised(np.histogram(np.clip(darkness, 0, 0.999), bins=10, range=(0, 1))[0])
    for name, (count, span) in PARTS.items():
        if name in names:
            out[name] = np.concatenate([pipe.embed_canvas(normalize_signature(part, opts).canvas)
                                        for part in ink_strips(cleaned, count, span, opts)])
    return {k: np.asarray(v, np.float32) for k, v in out.items() if k in names}


def column_profiles(mask: np.ndarray, bins: int) -> np.ndarray:
    """Three profiles of an ink mask along its width, ``bins`` steps each: the share of ink in
    the step's columns, and the top and bottom edge of the ink there (0 top, 1 bottom). A step
    without ink (a gap between words) takes its edges from the steps beside it."""
    height = mask.shape[0]
    rows = np.arange(height)[:, None]
    on = mask > 0
    top = np.where(on, rows, height).min(axis=0).astype(np.float64)
    bottom = np.where(on, rows, -1).max(axis=0).astype(np.float64)
    has = on.any(axis=0)
    steps = np.array_split(np.arange(mask.shape[1]), bins) if mask.shape[1] >= bins else \
        [np.array([min(k * mask.shape[1] // bins, mask.shape[1] - 1)]) for k in range(bins)]
    share = np.array([on[:, c].mean() for c in steps])
    edges = np.full((2, bins), np.nan)
    for k, c in enumerate(steps):
        c = c[has[c]]
        if len(c):
            edges[:, k] = top[c].min() / height, bottom[c].max() / height
    known = np.flatnonzero(~np.isnan(edges[0]))
    for e in edges:  # gaps between words: from the steps beside them
        e[:] = np.interp(np.arange(bins), known, e[known]) if len(known) else 0.5
    return np.concatenate([share, edges[0], edges[1]])


def dtw_distances(a: np.ndarray, b: np.ndarray, groups: int, band: int) -> np.ndarray:
    """Dynamic-time-warping distances (..., groups) between vectors (..., groups * length) of
    ``groups`` profiles each, that broadcast: the mean absolute difference along the cheapest
    monotone alignment that pairs no two points more than ``band`` steps apart."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    lead = a.shape[:-1]
    length = a.shape[-1] // groups
    a = a.reshape(-1, groups, length)
    b = b.reshape(-1, groups, length)
    inf = np.full(a.shape[:2], np.inf)
    previous = [inf] * length  # row i-1 of the cumulative cost, column by column
    for i in range(length):
        current = [inf] * length
        for j in range(max(0, i - band), min(length, i + band + 1)):
            step = np.abs(a[..., i] - b[..., j])
            if i == 0 and j == 0:
                current[j] = step
                continue
            best = np.minimum(np.minimum(previous[j], current[j - 1] if j else inf),
                              previous[j - 1] if j else inf)
            current[j] = step + best
        previous = current
    return (previous[length - 1] / (2 * length)).reshape(*lead, groups)


def _column_strips(mask: np.ndarray, count: int, span: float) -> list[np.ndarray]:
    """``count`` strips of a mask's columns, each ``span`` of its width, evenly spaced from the
    left edge to the right one (as :func:`sigedge.normalize.ink_strips` cuts the ink box)."""
    width = mask.shape[1]
    size = max(1, int(round(span * width)))
    starts = np.linspace(0, width - size, count).round().astype(int)
    return [mask[:, x:x + size] for x in starts]


def _normalised(counts: np.ndarray) -> np.ndarray:
    return counts / max(float(counts.sum()), 1.0)


def _paper_runs(mask: np.ndarray) -> np.ndarray:
    """Histogram of the lengths of paper runs between two strokes along the rows of a mask."""
    lengths = []
    for row in mask:
        ink = np.flatnonzero(row)
        if len(ink) > 1:
            gaps = np.diff(ink) - 1
            lengths.append(gaps[gaps > 0])
    runs = np.concatenate(lengths) if lengths else np.zeros(0)
    return _normalised(np.histogram(runs, bins=RUN_EDGES)[0].astype(np.float64))


def describe(fold: int, bundle: Path, cache: Path, names: tuple[str, ...] = MEASURED) -> None:
    pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
    if pipe.scorer is None or pipe.scorer.background is None or pipe.hinge is None:
        raise SystemExit(f"{bundle}: needs a scorer with a background and a contour hinge")
    arrays: dict[str, np.ndarray] = {}
    for coll in COLLECTIONS:
        emb, ink, extra, writers, kinds = [], [], {k: [] for k in names}, [], []
        for path, writer, kind in read_split(split_dir(fold) / f"{coll}_val.csv"):
            try:
                cleaned = pipe._cleaned(path)
                per_angle = []
                for angle in SEARCH:
                    img = cleaned if angle == 0.0 else rotate_image(cleaned, angle)
                    f = pipe._features(img)
                    per_angle.append((f.embedding, f.ink, candidates(img, pipe, names)))
            except SigedgeError as exc:
                log.warning("skipped %s: %s", path, exc)
                continue
            emb.append(np.stack([e for e, _, _ in per_angle]))
            ink.append(np.stack([k for _, k, _ in per_angle]))
            for name in names:
                extra[name].append(np.stack([c[name] for _, _, c in per_angle]))
            writers.append(writer)
            kinds.append(kind)
        arrays[f"{coll}/emb"], arrays[f"{coll}/ink"] = np.stack(emb), np.stack(ink)
        arrays.update({f"{coll}/{name}": np.stack(v) for name, v in extra.items()})
        arrays[f"{coll}/writers"], arrays[f"{coll}/kinds"] = np.array(writers), np.array(kinds)
        print(f"fold {fold} {coll}: {len(writers)} images", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    tag = "" if names == MEASURED else "-" + "+".join(names)
    np.savez_compressed(cache / f"fold{fold}{tag}.npz", bundle=str(bundle), **arrays)


class Described:
    """One fold's cached validation descriptions of one collection, at an angle index."""

    def __init__(self, data, coll: str, pipe: Pipeline):
        self.emb, self.ink = data[f"{coll}/emb"], data[f"{coll}/ink"]
        self.extra = {k: data[f"{coll}/{k}"] for k in MEASURED if f"{coll}/{k}" in data}
        self.writers, self.kinds = list(data[f"{coll}/writers"]), list(data[f"{coll}/kinds"])
        self.pipe = pipe


def _distances(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    kind, groups = CANDIDATES[name]
    if kind == "stats":
        return np.abs(a - b)
    if kind == "emb":  # one minus the cosine of each part's embedding, as the runtime's strips
        return strip_distances(a, b, StripSpec(count=groups, dim=a.shape[-1] // groups))
    if kind == "dtw":
        return dtw_distances(a, b, groups, PROFILE_BAND)
    return chi_square_distances(a, b, groups, a.shape[-1] // groups)


def trial_features(d: Described, names: tuple[str, ...], seed: int, angle: int, max_random: int, refs: int,
                   hinge_upright: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Trials of one draw: the shipped scorer's features of the queries at ``angle`` against
    upright references, then each named candidate's pair of features. ``hinge_upright``: the
    query's contour hinge is the upright one's at every angle (measured once, not per angle)."""
    scorer = d.pipe.scorer
    stats, hist = split_ink(d.ink.reshape(-1, d.ink.shape[-1]), scorer.statistics, scorer.hinge)
    n, a = d.ink.shape[:2]
    stats, hist = stats.reshape(n, a, -1), hist.reshape(n, a, -1)

    def features(chosen: np.ndarray, rows: np.ndarray) -> np.ndarray:
        x = scorer_features(d.emb[rows, angle], stats[rows, angle], d.emb[chosen, UP], stats[chosen, UP],
                            background=scorer.background, query_hinge=hist[rows, UP if hinge_upright else angle],
                            ref_hinge=hist[chosen, UP], hinge=scorer.hinge)
        cols = [x]
        for name in names:
            if name == "nearest":
                cols += _nearest(d.emb[rows, angle], hist[rows, angle], d.emb[chosen, UP], hist[chosen, UP],
                                 scorer.hinge)
                continue
            q, r = d.extra[name][rows, angle], d.extra[name][chosen, UP]
            pair = _distances(name, q[:, None], r[None, :]).mean(axis=1)
            i, j = np.triu_indices(len(chosen), k=1)
            own = _distances(name, r[i], r[j]).mean(axis=0)
            cols += [pair, pair - own[None, :]]
        return np.hstack(cols)

    x, kind, _ = trials(d.emb[:, UP], d.writers, d.kinds, refs, seed, max_random=max_random, features=features)
    return x, kind


def _nearest(q_emb, q_hinge, r_emb, r_hinge, spec) -> list[np.ndarray]:
    """The best cosine and the smallest hinge distances of each query to the references, and
    the same minus the references' own (each reference's nearest other, averaged)."""
    dist = np.concatenate([(q_emb @ r_emb.T)[..., None], -hinge_distances(q_hinge[:, None], r_hinge[None, :], spec)],
                          axis=-1)  # (N, R, 1 + fragments), larger is closer
    own = np.concatenate([(r_emb @ r_emb.T)[..., None], -hinge_distances(r_hinge[:, None], r_hinge[None, :], spec)],
                         axis=-1)
    own[np.arange(len(r_emb)), np.arange(len(r_emb))] = -np.inf
    pair, own_best = dist.max(axis=1), own.max(axis=1).mean(axis=0)
    return [pair, pair - own_best[None, :]]


def fit(train: list[tuple[Described, str]], names: tuple[str, ...]) -> tuple[np.ndarray, float]:
    parts = [[trial_features(d, names, 1000 + s, UP, 40, EVAL_REFERENCES[c]) for s in range(3)] for d, c in train]
    x = np.vstack([f for per in parts for f, _ in per])
    kind = np.concatenate([k for per in parts for _, k in per])
    weight = set_weights([np.concatenate([k for _, k in per]) for per in parts], [c for _, c in train])
    return fit_logistic(x, (kind == "genuine").astype(float), weight, l2=RIDGE)


def validation(val: dict[str, Described], model: tuple[np.ndarray, float], names: tuple[str, ...],
               draws: int, hinge_upright: bool = False) -> dict:
    coef, intercept = model
    out = {}
    for coll, d in val.items():
        max_random = 40 if coll == "cross_media_chinese" else 10 ** 6
        runs = {"search": [], "upright": []}
        for seed in range(draws):
            per_angle = [trial_features(d, names, seed, a, max_random, EVAL_REFERENCES[coll], hinge_upright)
                         for a in range(len(SEARCH))]
            z = np.stack([f @ coef + intercept for f, _ in per_angle])
            k = per_angle[0][1]
            for rule, score in (("search", z.max(axis=0)), ("upright", z[UP])):
                skilled = (equal_error_rate(score[k == "genuine"], score[k == "skilled"])[0]
                           if (k == "skilled").any() else np.nan)
                runs[rule].append([skilled, equal_error_rate(score[k == "genuine"], score[k == "random"])[0]])
        out[coll] = {rule: {"draw0": _pair(v[0]), "mean": _pair(np.mean(v, axis=0))} for rule, v in runs.items()}
    return out


def _pair(v) -> dict:
    return {name: (None if np.isnan(x) else float(x)) for name, x in zip(("eer_skilled", "eer_random"), v)}


def compare(specs: list[tuple[int, Path]], cache: Path, draws: int, sets: list[tuple[str, ...]],
            fit_collections: tuple[str, ...] = FIT, hinge_upright: bool = False) -> dict:
    data = {}
    for k, bundle in specs:
        pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
        npz = {key: a for path in sorted(cache.glob(f"fold{k}*.npz")) for key, a in np.load(path).items()}
        data[k] = {c: Described(npz, c, pipe) for c in COLLECTIONS}
    results = {}
    for names in sets:
        label = "shipped" + "".join(f" + {n}" for n in names)
        per_fold = {}
        for k, _ in specs:
            train = [(data[j][c], c) for j, _ in specs if j != k for c in fit_collections]
            per_fold[k] = validation(data[k], fit(train, names), names, draws, hinge_upright)
        mean = {c: {rule: {agg: {e: _mean([per_fold[k][c][rule][agg][e] for k in per_fold])
                                 for e in ("eer_skilled", "eer_random")} for agg in ("draw0", "mean")}
                    for rule in ("search", "upright")} for c in COLLECTIONS}
        results[label] = {"folds": per_fold, "mean": mean}
        m = mean
        print(f"{label:40s} sigcomp search d0 {_pc(m['sigcomp2011_dutch']['search']['draw0'])} "
              f"{draws}d {_pc(m['sigcomp2011_dutch']['search']['mean'])} upright {draws}d "
              f"{_pc(m['sigcomp2011_dutch']['upright']['mean'])} | ssbi {_pc(m['ssbi']['search']['mean'])} | "
              f"cm random {100 * m['cross_media_chinese']['search']['mean']['eer_random']:.2f}  folds d0 "
              + " ".join(_pc(per_fold[k]['sigcomp2011_dutch']['search']['draw0']) for k in per_fold), flush=True)
    return results


def _mean(values: list) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _pc(r: dict) -> str:
    return "/".join("–" if r[e] is None else f"{100 * r[e]:.2f}" for e in ("eer_skilled", "eer_random"))


def _more_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("step", choices=("describe", "compare"))
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "scorer-candidates")
    ap.add_argument("--sets", default=",".join(["", *CANDIDATES]),
                    help="compare: candidate sets to add, comma-separated, each a '+'-joined list of names; empty: none")
    ap.add_argument("--fit", default=",".join(FIT),
                    help="compare: the collections whose validation writers of the other folds the scorer is "
                         "fitted on, comma-separated (export.fit_scorer --cross-fit's: sigcomp2011_dutch and ssbi)")
    ap.add_argument("--hinge-upright", action="store_true",
                    help="compare: score each turned query with its upright contour hinge (measured once a "
                         "query, not at each angle; the fit is upright either way)")
    ap.add_argument("--measure", default="+".join(MEASURED),
                    help="describe: the candidates to measure, '+'-joined (a cache file each set; default: all)")


def main(argv=None) -> int:
    args, specs = fold_arguments(__doc__, argv, _more_arguments)
    if args.step == "describe":
        names = tuple(args.measure.split("+"))
        if set(names) - set(MEASURED):
            raise SystemExit(f"unknown candidates {sorted(set(names) - set(MEASURED))}; measured: {list(MEASURED)}")
        for k, bundle in specs:
            describe(k, bundle, args.cache, names)
        return 0
    sets = [tuple(n for n in s.split("+") if n) for s in args.sets.split(",")]
    unknown = {n for s in sets for n in s} - set(CANDIDATES)
    if unknown:
        raise SystemExit(f"unknown candidates {sorted(unknown)}; known: {sorted(CANDIDATES)}")
    fit_collections = tuple(c for c in args.fit.split(",") if c)
    if not fit_collections or set(fit_collections) - set(COLLECTIONS):
        raise SystemExit(f"--fit takes collections among {list(COLLECTIONS)}, not {args.fit!r}")
    results = compare(specs, args.cache, args.draws, sets, fit_collections, args.hinge_upright)
    if args.out:
        args.out.write_text(json.dumps({"results": results, "search_angles": list(SEARCH), "draws": args.draws,
                                        "fit_collections": list(fit_collections),
                                        "hinge_upright": args.hinge_upright,
                                        "folds": {k: str(b) for k, b in specs}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
