"""Writer-fold cross-validation of the embedder recipe, side by side with HOG + cosine.

    # one embedder per fold, each trained without its fold's writers (fold 0 is the shipped one)
    TF_USE_LEGACY_KERAS=1 python -m training.train_embedder --fold K --out runs/embedder-foldK \\
        --epochs 35 --qat-epochs 4 --steps 100 --batch 64 --seed 2 --pair-writers 4
    sigedge export --int8 --run runs/embedder-foldK --out runs/embedder-foldK/bundle
    python -m training.make_splits --fold K
    python benchmarks/crossval.py --fold 0=sigedge/models/default --fold 1=runs/embedder-fold1/bundle ... \\
        --out benchmarks/results/crossval.json

``training.data.split_writers(fold=K)`` holds out the K-th quarter of sigcomp2011_dutch's
44 writers (11 each), so folds 0-3 together test every writer once, each time with a model
that never saw it. Per fold, on the fold's validation CSVs and the protocol of ``sigedge
evaluate`` (seeded references, mean fusion):

* sigcomp2011_dutch (5 references): skilled and random EER, FRR at FAR 1 %, for the int8
  and float embedders of that fold's bundle and for HOG + cosine on the same canvases;
* cross_media_chinese (2 references, identities are (writer, name) pairs): random EER and the
  *same-name* EER, whose impostors are other writers' signatures of the same name, the
  natural hard impostors of that set;
* ``int8-norm``: the int8 embeddings scored as the bundle verifies them, with its per-writer
  normalisation (``verification.writer_normalisation``, fitted on that fold's training
  writers by ``python -m export.scoring --bundle B --splits training/splits/foldK``); only
  for bundles that state one;
* ``int8-learned``: the int8 embeddings and the ink statistics scored by the bundle's learned
  scorer (``verification.scorer``, fitted on that fold's training writers by ``python -m
  export.fit_scorer --bundle B --splits training/splits/foldK``), as the bundle verifies:
  each query also at the bundle's query rotations (``verification.query_rotations``), its
  best score counting, references upright; only for bundles that state a scorer;
* ``int8+hog``: an unweighted fusion, the mean of the int8 embedder's and HOG's cosines
  (fixed in advance, not tuned on these writers), to see whether the two are complementary;
* baselines given as ``--baseline NAME:K=BUNDLE`` (e.g. the float SigNet of
  ``python -m training.train_embedder --arch signet``, trained without fold K's writers), run
  on the same rows;
* each method's model size (bytes of its TFLite file; HOG has none) and latency a crop
  (p50 of the model call on one normalised canvas, one thread; for HOG the descriptor),
  measured in the same process so the ratios between methods are comparable.

The summary gives each fold's numbers and their mean. A fold without a bundle is skipped
and reported as missing, never filled in. A fold named only by a ``--baseline`` (its
sigedge bundle no longer at hand) is scored for HOG and the baselines alone; each mean
says which folds it covers.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hog_baseline import hog  # noqa: E402
from robustness import describe_all, describe_variants  # noqa: E402

from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.clean import clean_signature  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.hinge import contour_hinge  # noqa: E402
from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.normalize import NormalizeOptions, normalize_signature  # noqa: E402
from sigedge.scoring import LearnedScorer, WriterNormalisation, ink_statistics, l2_normalize  # noqa: E402
from sigedge.bench import time_stage  # noqa: E402

log = logging.getLogger("crossval")
SPLITS = ROOT / "training" / "splits"
METHODS = ("int8", "int8-learned", "int8-norm", "float", "hog", "int8+hog")
LATENCY_REPEAT = 50


def split_dir(fold: int) -> Path:
    return SPLITS if fold == 0 else SPLITS / f"fold{fold}"


def read_rows(labels: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    images = [load_image(labels.parent / r["path"]) for r in rows]
    return images, [r["writer"] for r in rows], [r["kind"] for r in rows]


def same_name_impostors(writers: list[str]) -> tuple[list[int], list[str], list[str]]:
    """Extra protocol rows: every genuine of (w', name) as a forgery of (w, name), w' != w.

    Returned as (row index into the embeddings, claimed identity, kind) to append; the
    protocol then scores them as that identity's skilled impostors (they are not random
    impostors for anyone, since only genuine rows serve as those)."""
    by_name: dict[str, list[int]] = {}
    for i, ident in enumerate(writers):
        by_name.setdefault(ident.split(":", 1)[1], []).append(i)
    rows, claimed, kinds = [], [], []
    for idx in by_name.values():
        identities = sorted({writers[i] for i in idx})
        for ident in identities:
            for i in idx:
                if writers[i] != ident:
                    rows.append(i)
                    claimed.append(ident)
                    kinds.append("forgery")
    return rows, claimed, kinds


def scores_report(emb: np.ndarray, writers: list[str], kinds: list[str], refs: int, seed: int,
                  normalisation: WriterNormalisation | None = None, scorer: LearnedScorer | None = None,
                  ink: np.ndarray | None = None, variants: list | None = None) -> dict:
    rep = report_from_scores(protocol_scores(emb, writers, kinds, refs, seed=seed, normalisation=normalisation,
                                             scorer=scorer, ink=ink, query_variants=variants), refs)
    return {"eer_skilled": rep.eer_skilled, "eer_random": rep.eer_random,
            "frr_at_far1_skilled": rep.frr_at_far1_skilled, "frr_at_far1_random": rep.frr_at_far1_random,
            "writers": rep.writers, "n_genuine": rep.n_genuine, "n_skilled": rep.n_skilled, "n_random": rep.n_random}


def hog_embeddings(images: list[np.ndarray]) -> np.ndarray:
    opts = NormalizeOptions(height=128, width=256)
    feats = []
    for img in images:
        try:
            feats.append(hog(normalize_signature(clean_signature(img), opts).canvas))
        except SigedgeError:
            feats.append(None)
    dim = next(f for f in feats if f is not None).shape[0]
    return l2_normalize(np.stack([f if f is not None else np.zeros(dim, np.float32) for f in feats]))


def fused(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows whose cosine is the mean of the two inputs' cosines (both L2-normalised)."""
    return np.concatenate([a, b], axis=1) / np.sqrt(2.0)


def model_cost(pipe: Pipeline, canvases: list[np.ndarray]) -> dict:
    """File size of the pipeline's embedder and p50 ms of one model call on a canvas."""
    t = time_stage(pipe.embed_canvas, canvases, LATENCY_REPEAT)
    return {"model_bytes": pipe.embedder_spec.file.stat().st_size, "latency_ms_p50": t["p50_ms"]}


def hog_cost(images: list[np.ndarray]) -> dict:
    opts = NormalizeOptions(height=128, width=256)
    canvases = [normalize_signature(clean_signature(img), opts).canvas for img in images[:8]]
    return {"model_bytes": 0, "latency_ms_p50": time_stage(hog, canvases, LATENCY_REPEAT)["p50_ms"]}


def canvases_for(pipe: Pipeline, images: list[np.ndarray]) -> list[np.ndarray]:
    return [pipe.prepare(img).canvas for img in images[:8]]


def evaluate_fold(fold: int, bundle: Path | None, refs: int, seed: int,
                  baselines: dict[str, Path] | None = None) -> dict:
    out: dict = {"fold": fold, "bundle": str(bundle) if bundle else None}
    images, writers, kinds = read_rows(split_dir(fold) / "sigcomp2011_dutch_val.csv")
    out["sigcomp_writers"] = sorted(set(writers))
    methods = {"hog": hog_embeddings(images)}
    cost = {"hog": hog_cost(images)}
    cm_images, cm_ids, cm_kinds = read_rows(split_dir(fold) / "cross_media_chinese_val.csv")
    extra_rows, extra_ids, extra_kinds = same_name_impostors(cm_ids)
    cm_methods = {}
    norm: WriterNormalisation | None = None  # the bundle's per-writer normalisation, if it states one
    scorer: LearnedScorer | None = None  # the bundle's learned scorer, if it states one
    ink, cm_ink = None, None
    variants, cm_variants = None, None  # the int8 queries at the bundle's query rotations
    runs = [(precision, bundle, precision) for precision in ("int8", "float")] if bundle is not None else []
    runs += [(name, path, "float") for name, path in (baselines or {}).items()]
    for name, path, precision in runs:
        pipe = Pipeline(path, PipelineOptions(precision=precision))
        out.setdefault("model_sha256", {})[name] = pipe.model_sha256
        canvases = canvases_for(pipe, images)
        cost[name] = model_cost(pipe, canvases)
        if name != "int8":  # every other method scores the upright query by the cosine
            methods[name], _ = describe_all(pipe, images)
            cm_methods[name], _ = describe_all(pipe, cm_images)
            continue
        # the int8 queries also at the bundle's rotations, for "int8-learned"; references upright
        upright = pipe.query_rotations.index(0.0)
        sig_variants, cm_sig_variants = describe_variants(pipe, images), describe_variants(pipe, cm_images)
        (methods[name], ink), (cm_methods[name], cm_ink) = sig_variants[upright], cm_sig_variants[upright]
        norm, scorer = pipe.normalisation, pipe.scorer
        out["query_rotations"] = list(pipe.query_rotations)
        if scorer is not None:
            variants, cm_variants = sig_variants, cm_sig_variants
            # the model call, the ink statistics and the contour hinge (where the scorer weighs
            # it; traced on the uncleaned crop here) at each of the bundle's rotations (the turn
            # and normalisation are left out, as for every method; sigedge bench times a whole query)
            per_angle = cost[name]["latency_ms_p50"] + time_stage(ink_statistics, canvases, LATENCY_REPEAT)["p50_ms"]
            if pipe.hinge is not None:
                per_angle += time_stage(lambda img: contour_hinge(img, pipe.hinge), images, LATENCY_REPEAT)["p50_ms"]
            cost["int8-learned"] = {"model_bytes": cost[name]["model_bytes"],
                                    "latency_ms_p50": len(pipe.query_rotations) * per_angle}
    cm_methods["hog"] = hog_embeddings(cm_images)
    if bundle is not None:
        for group in (methods, cm_methods):
            group["int8+hog"] = fused(group["int8"], group["hog"])
        cost["int8+hog"] = {"model_bytes": cost["int8"]["model_bytes"],
                            "latency_ms_p50": cost["int8"]["latency_ms_p50"] + cost["hog"]["latency_ms_p50"]}
    out["cost"] = cost
    # "int8-norm": the int8 embeddings scored as the bundle verifies, normalised per writer
    if norm is not None:
        for group in (methods, cm_methods):
            group["int8-norm"] = group["int8"]
        normalised = {m: (norm if m == "int8-norm" else None) for m in methods}
        cost["int8-norm"] = cost["int8"]
    else:
        normalised = {m: None for m in methods}
    # "int8-learned": the int8 embeddings and ink statistics scored by the bundle's scorer
    if scorer is not None:
        for group in (methods, cm_methods):
            group["int8-learned"] = group["int8"]
    learned = {m: (scorer if m == "int8-learned" else None) for m in methods}
    # "int8-learned" scores each query at its best of the bundle's rotations, as verification does
    queried = {m: (variants if m == "int8-learned" else None) for m in methods}
    out["sigcomp2011_dutch"] = {m: scores_report(e, writers, kinds, refs, seed, normalised.get(m), learned[m], ink,
                                                 queried[m]) for m, e in methods.items()}
    cm_refs = 2
    out["cross_media_chinese"] = {}
    for m, e in cm_methods.items():
        v = cm_variants if m == "int8-learned" else None
        random_only = scores_report(e, cm_ids, cm_kinds, cm_refs, seed, normalised.get(m), learned.get(m), cm_ink, v)
        same_name = scores_report(np.concatenate([e, e[extra_rows]]), cm_ids + extra_ids, cm_kinds + extra_kinds,
                                  cm_refs, seed, normalised.get(m), learned.get(m),
                                  None if cm_ink is None else np.concatenate([cm_ink, cm_ink[extra_rows]]),
                                  None if v is None else [(np.concatenate([a, a[extra_rows]]),
                                                           np.concatenate([b, b[extra_rows]])) for a, b in v])
        out["cross_media_chinese"][m] = {"eer_random": random_only["eer_random"],
                                         "eer_same_name": same_name["eer_skilled"],
                                         "identities": random_only["writers"], "n_same_name": same_name["n_skilled"]}
    return out


def method_names(folds: list[dict]) -> list[str]:
    """The fixed methods these folds have, then any baselines, in first-seen order."""
    present = {m for f in folds for m in f["sigcomp2011_dutch"]}
    extra = [m for f in folds for m in f["sigcomp2011_dutch"] if m not in METHODS]
    return [m for m in METHODS if m in present] + list(dict.fromkeys(extra))


def summary(folds: list[dict]) -> dict:
    res = {"folds": [f["fold"] for f in folds]}
    for m in method_names(folds):
        have = [f for f in folds if m in f["sigcomp2011_dutch"]]

        def mean(get, have=have) -> float:
            return float(np.mean([get(f) for f in have]))

        res[m] = {
            "folds": [f["fold"] for f in have],
            "model_bytes": int(np.max([f["cost"][m]["model_bytes"] for f in have])),
            "latency_ms_p50": mean(lambda f: f["cost"][m]["latency_ms_p50"]),
            "sigcomp_eer_skilled": mean(lambda f: f["sigcomp2011_dutch"][m]["eer_skilled"]),
            "sigcomp_eer_random": mean(lambda f: f["sigcomp2011_dutch"][m]["eer_random"]),
            "sigcomp_frr_at_far1_skilled": mean(lambda f: f["sigcomp2011_dutch"][m]["frr_at_far1_skilled"]),
            "cross_media_eer_random": mean(lambda f: f["cross_media_chinese"][m]["eer_random"]),
            "cross_media_eer_same_name": mean(lambda f: f["cross_media_chinese"][m]["eer_same_name"]),
        }
    return res


def print_table(folds: list[dict], mean: dict) -> None:
    print(f"\n{'fold':>4s} {'method':8s} {'skilled':>8s} {'random':>7s} {'FRR@1%':>7s} {'CM rand':>8s} {'CM name':>8s}"
          f" {'MB':>6s} {'ms/crop':>7s}", file=sys.stderr)
    for f in folds:
        for m in method_names([f]):
            s, c, k = f["sigcomp2011_dutch"][m], f["cross_media_chinese"][m], f["cost"][m]
            print(f"{f['fold']:>4d} {m:8s} {100 * s['eer_skilled']:7.2f}% {100 * s['eer_random']:6.2f}% "
                  f"{100 * s['frr_at_far1_skilled']:6.1f}% {100 * c['eer_random']:7.2f}% {100 * c['eer_same_name']:7.2f}%"
                  f" {k['model_bytes'] / 1e6:6.2f} {k['latency_ms_p50']:7.2f}", file=sys.stderr)
    for m, r in mean.items():
        if m == "folds":
            continue
        print(f"{'mean':>4s} {m:8s} {100 * r['sigcomp_eer_skilled']:7.2f}% {100 * r['sigcomp_eer_random']:6.2f}% "
              f"{100 * r['sigcomp_frr_at_far1_skilled']:6.1f}% {100 * r['cross_media_eer_random']:7.2f}% "
              f"{100 * r['cross_media_eer_same_name']:7.2f}% {r['model_bytes'] / 1e6:6.2f} {r['latency_ms_p50']:7.2f}"
              f"  (folds {','.join(map(str, r['folds']))})", file=sys.stderr)


def parse_baseline(text: str) -> tuple[str, int, Path]:
    name, _, rest = text.partition(":")
    if not name or name in METHODS:
        raise argparse.ArgumentTypeError(f"expected NAME:K=BUNDLE_DIR with a new NAME, got {text!r}")
    k, path = parse_fold(rest)
    return name, k, path


def parse_fold(text: str) -> tuple[int, Path]:
    k, _, path = text.partition("=")
    if not k.isdigit() or not path:
        raise argparse.ArgumentTypeError(f"expected K=BUNDLE_DIR, got {text!r}")
    return int(k), Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=parse_fold, action="append", default=[], metavar="K=BUNDLE",
                    help="a fold and the bundle trained without its writers (repeat per fold)")
    ap.add_argument("--baseline", type=parse_baseline, action="append", default=[], metavar="NAME:K=BUNDLE",
                    help="a float baseline model for fold K, e.g. signet:0=runs/signet-fold0/bundle (repeatable)")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folds = []
    bundles: dict[int, Path | None] = {k: None for _, k, _ in args.baseline}
    bundles.update(dict(args.fold))
    for k, bundle in sorted(bundles.items()):
        if (bundle is not None and not (bundle / "manifest.json").is_file()) \
                or not (split_dir(k) / "sigcomp2011_dutch_val.csv").is_file():
            log.warning("fold %d: no bundle at %s or no split CSVs (python -m training.make_splits --fold %d); "
                        "skipped", k, bundle, k)
            continue
        if bundle is None:
            log.info("fold %d: no sigedge bundle given; HOG and the baselines only", k)
        baselines = {name: path for name, kb, path in args.baseline if kb == k}
        folds.append(evaluate_fold(k, bundle, args.refs, args.seed, baselines))
        log.info("fold %d: %s", k, folds[-1]["sigcomp2011_dutch"])
    if not folds:
        log.error("no fold could be evaluated")
        return 1
    result = {"references": args.refs, "seed": args.seed, "folds": folds, "mean": summary(folds)}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    print_table(folds, result["mean"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
