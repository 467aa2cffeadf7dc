"""``sigedge bench``: per-stage latency of the pipeline on one thread, int8 next to float.

Every stage is timed in the same process on the same inputs, so the ratios between the
int8 and the float embedder are meaningful on any machine even where absolute times are not.
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import typer

from .bundle import ModelBundle
from .clean import clean_signature
from .cli_common import print_table
from .imageio import load_image, read_image_bytes
from .interpreter import TFLiteModel, interpreter_backend
from .normalize import normalize_signature
from .hinge import ink_hinge
from .scoring import LearnedScorer, cosine_similarities, fuse_scores, ink_statistics, l2_normalize
from .synth import synthetic_signature

__all__ = ["run_bench", "print_bench", "time_stage"]


def _without_background(scorer: LearnedScorer) -> LearnedScorer:
    """``scorer`` without its background and the two weights of its direction feature (after
    the cosine and the ink statistics in each half): only for timing, its scores mean nothing."""
    n, d = len(scorer.coef) // 2, 1 + len(scorer.statistics)
    keep = [i for i in range(2 * n) if i not in (d, n + d)]
    return replace(scorer, background=None, coef=tuple(scorer.coef[i] for i in keep),
                   own_default=tuple(v for i, v in enumerate(scorer.own_default) if i != d))


def time_stage(fn: Callable[[object], object], inputs: Sequence[object], repeat: int) -> dict:
    """Run ``fn`` over the inputs (round-robin) ``repeat`` times after one warm-up each; ms stats."""
    for x in inputs:
        fn(x)
    times = []
    for k in range(repeat):
        x = inputs[k % len(inputs)]
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000.0)
    arr = np.array(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "runs": repeat}


def _encoded_inputs(images: Sequence[Path]) -> list[bytes]:
    if images:
        return [read_image_bytes(p) for p in images]
    out = []
    for w in range(8):  # generated crops of scanner-like size, PNG-encoded
        ok, buf = cv2.imencode(".png", synthetic_signature(w, 0, size=(300, 800), jitter=0.5))
        out.append(buf.tobytes())
    return out


def run_bench(bundle_dir: Path | None, images: Sequence[Path], repeat: int = 50,
              pages: Sequence[Path] = ()) -> dict:
    """Time every stage; ``images`` are crops for the embedder and ``pages`` whole pages for
    the detector (generated ones where empty)."""
    bundle = ModelBundle.load(bundle_dir)
    opts = bundle.normalize_options
    built: list = []

    def pipeline():  # the bundle's Pipeline, built once, for the stages that time it whole
        from .pipeline import Pipeline

        if not built:
            built.append(Pipeline(bundle_dir))
        return built[0]

    encoded = _encoded_inputs(images)
    decoded = [load_image(b) for b in encoded]
    cleaned = [clean_signature(img) for img in decoded]
    normalized = [normalize_signature(img, opts) for img in cleaned]
    canvases = [n.canvas for n in normalized]
    report: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": 1, "interpreter_backend": interpreter_backend()},
        "inputs": len(encoded), "source": "given images" if images else "generated 800x300 PNG signatures",
        "stages": {},
        "models": {},
    }
    stages = report["stages"]
    stages["decode"] = time_stage(load_image, encoded, repeat)
    stages["normalise"] = time_stage(lambda img: normalize_signature(clean_signature(img), opts), decoded, repeat)
    _bench_cleaner(bundle, report, decoded, repeat)
    embeddings = {}
    for role in ("embedder", "embedder_float"):
        if role not in bundle.models:
            continue
        spec = bundle.models[role]
        model = TFLiteModel(spec.file, threads=1)
        stages[f"embed_{spec.precision}"] = time_stage(lambda c: model(c[..., None]), canvases, repeat)
        report["models"][role] = _model_row(spec)
        embeddings[role] = l2_normalize(np.stack([model(c[..., None]) for c in canvases]))
    refs = embeddings["embedder"][:5]
    stages["score"] = time_stage(lambda q: fuse_scores(cosine_similarities(q, refs)), list(embeddings["embedder"]), repeat)
    scorer = LearnedScorer.from_manifest(bundle.verification.get("scorer"))
    if scorer is not None:  # what the learned scorer adds: the ink statistics and its features
        inks = np.stack([ink_statistics(c) for c in canvases])
        stages["ink_statistics"] = time_stage(ink_statistics, canvases, repeat)
        if scorer.hinge is not None:  # from the normalisation's ink mask, as the pipeline traces it
            masks = [n.ink_mask for n in normalized]
            inks = np.hstack([inks, np.stack([ink_hinge(m, scorer.hinge) for m in masks])])
            stages["contour_hinge"] = time_stage(lambda m: ink_hinge(m, scorer.hinge), masks, repeat)
        if scorer.strips is not None:  # as the pipeline embeds them (int8, one thread)
            strip_embeddings = pipeline().strip_embeddings
            inks = np.hstack([inks, np.stack([strip_embeddings(img) for img in cleaned])])
            stages["strip_embeddings"] = time_stage(strip_embeddings, cleaned, repeat)
        stages["score_learned"] = time_stage(lambda i: scorer.score(embeddings["embedder"][i], inks[i], refs, inks[:5]),
                                             list(range(len(canvases))), repeat)
        if scorer.background is not None:  # the same scorer less its direction feature: what the background costs
            plain = _without_background(scorer)
            stages["score_learned_without_background"] = time_stage(
                lambda i: plain.score(embeddings["embedder"][i], inks[i], refs, inks[:5]), list(range(len(canvases))),
                repeat)
            report["score_background_cost_vs_without"] = (stages["score_learned"]["p50_ms"]
                                                          / stages["score_learned_without_background"]["p50_ms"])
    if "embed_int8" in stages and "embed_float32" in stages:
        report["int8_speedup_vs_float"] = stages["embed_float32"]["p50_ms"] / stages["embed_int8"]["p50_ms"]
        report["int8_size_ratio_vs_float"] = (report["models"]["embedder"]["bytes"]
                                              / report["models"]["embedder_float"]["bytes"])
        cos = np.sum(embeddings["embedder"] * embeddings["embedder_float"], axis=1)
        report["int8_vs_float_embedding_cosine"] = float(cos.mean())
    rotations = bundle.query_rotations
    report["query_rotations"] = list(rotations)
    if len(rotations) > 1:  # a query is described at every rotation: what verification pays for it
        pipe = pipeline()
        stages["describe_upright"] = time_stage(pipe.describe, decoded, repeat)
        stages["describe_query"] = time_stage(pipe.describe_query, decoded, repeat)
        report["query_rotations_cost_vs_upright"] = (stages["describe_query"]["p50_ms"]
                                                     / stages["describe_upright"]["p50_ms"])
        # the same query without the contour hinge, or without the strips: what each costs
        for part, name in (("hinge", "contour_hinge"), ("strips", "strip_embeddings")):
            kept = getattr(pipe, part)
            if kept is None:
                continue
            setattr(pipe, part, None)
            stages[f"describe_query_without_{part}"] = time_stage(pipe.describe_query, decoded, repeat)
            report[f"{name}_cost_vs_without"] = (stages["describe_query"]["p50_ms"]
                                                 / stages[f"describe_query_without_{part}"]["p50_ms"])
            setattr(pipe, part, kept)
    _bench_detector(bundle, report, repeat, pages)
    score = ("score_learned",) if "score_learned" in stages else ("score",)
    if len(rotations) > 1:  # decode, clean once, then normalise + embed + measure + score an angle
        total = stages["decode"]["p50_ms"] + stages["describe_query"]["p50_ms"] + len(rotations) * sum(
            stages[s]["p50_ms"] for s in score)
    else:
        scoring = (("ink_statistics", *(s for s in ("contour_hinge", "strip_embeddings") if s in stages), *score)
                   if "score_learned" in stages else score)
        total = sum(stages[s]["p50_ms"] for s in ("decode", "normalise", *scoring)) + stages.get(
            "embed_int8", stages.get("embed_float32"))["p50_ms"]
    report["end_to_end_p50_ms"] = total
    return report


def _bench_cleaner(bundle: ModelBundle, report: dict, decoded: list[np.ndarray], repeat: int) -> None:
    """Classic cleaning of a crop, and the bundle's learned cleaner (int8 and float) on top of it."""
    from .clean import CleanOptions, LearnedCleaner

    stages = report["stages"]
    stages["clean_classic"] = time_stage(clean_signature, decoded, repeat)
    learned = CleanOptions(method="learned")
    for role in ("cleaner", "cleaner_float"):
        if role not in bundle.models:
            continue
        spec = bundle.models[role]
        cleaner = LearnedCleaner(spec, threads=1)
        stages[f"clean_learned_{spec.precision}"] = time_stage(lambda img: clean_signature(img, learned, cleaner),
                                                               decoded, repeat)
        report["models"][role] = _model_row(spec)
    if "clean_learned_int8" in stages:
        report["learned_cleaning_cost_vs_classic"] = (stages["clean_learned_int8"]["p50_ms"]
                                                      / stages["clean_classic"]["p50_ms"])
        if "clean_learned_float32" in stages:
            report["cleaner_int8_speedup_vs_float"] = (stages["clean_learned_float32"]["p50_ms"]
                                                       / stages["clean_learned_int8"]["p50_ms"])


def _generated_pages(n: int = 4, size: int = 640) -> list[np.ndarray]:
    """Page-like inputs: printed-text lines and a generated signature, ``size`` square, in
    colour as a scanner delivers them."""
    rng = np.random.default_rng(0)
    pages = []
    for k in range(n):
        page = np.full((size, size), 245, np.uint8)
        for y in range(40, size - 160, 18):
            x = 40
            while x < size - 80:
                w = int(rng.integers(20, 70))
                cv2.rectangle(page, (x, y), (x + w, y + 7), 30, -1)
                x += w + 10
        sig = synthetic_signature(k, 0, size=(90, 260), jitter=0.5).min(axis=2)
        page[size - 130:size - 40, 300:560] = np.minimum(page[size - 130:size - 40, 300:560], sig)
        pages.append(cv2.cvtColor(page, cv2.COLOR_GRAY2BGR))
    return pages


def _bench_detector(bundle: ModelBundle, report: dict, repeat: int, page_files: Sequence[Path] = ()) -> None:
    """Whole-page detection (letterbox + model + decode + NMS), int8 next to float, on the
    decoded ``page_files`` (every one at least once) or on generated pages.

    With a rescorer in the bundle, each precision is timed twice: the detector alone
    (``detect_page_<precision>``) and with its candidates re-scored (``..._rescored``), which
    is what ``Pipeline.detect`` runs. A real page's time grows with its candidates.
    """
    from .detect import DetectOptions, Detector, rescorer_roles

    pages = [load_image(p) for p in page_files] or _generated_pages()
    report["pages"] = len(pages)
    report["pages_source"] = "given pages" if page_files else "generated 640x640 pages"
    runs = -(-max(10, repeat // 2) // len(pages)) * len(pages)  # whole passes: every page counts alike
    for role in ("detector", "detector_float"):
        if role not in bundle.models:
            continue
        spec = bundle.models[role]
        det = Detector(spec, threads=1, options=DetectOptions(rescore=False))
        report["stages"][f"detect_page_{spec.precision}"] = time_stage(det.detect, pages, runs)
        report["models"][role] = _model_row(spec)
        roles = rescorer_roles(spec.raw)
        if roles and all(r in bundle.models for r in roles):
            rescored = Detector(spec, threads=1, rescorers=[bundle.models[r] for r in roles])
            report["stages"][f"detect_page_{spec.precision}_rescored"] = time_stage(rescored.detect, pages, runs)
            for r in roles:
                report["models"][r] = _model_row(bundle.models[r])
    st = report["stages"]
    if "detect_page_int8" in st and "detect_page_float32" in st:
        report["detector_int8_speedup_vs_float"] = st["detect_page_float32"]["p50_ms"] / st["detect_page_int8"]["p50_ms"]
    if "detect_page_int8_rescored" in st and "detect_page_float32_rescored" in st:
        report["rescored_detector_int8_speedup_vs_float"] = (st["detect_page_float32_rescored"]["p50_ms"]
                                                             / st["detect_page_int8_rescored"]["p50_ms"])


def _model_row(spec) -> dict:
    return {"file": spec.file.name, "precision": spec.precision, "bytes": spec.file.stat().st_size,
            "sha256": spec.sha256}


def print_bench(report: dict) -> None:
    m = report["machine"]
    typer.echo(f"{report['inputs']} inputs ({report['source']}), 1 thread, backend {m['interpreter_backend']}, "
               f"{m['processor']}")
    print_table(["stage", "p50 ms", "p90 ms", "mean ms", "runs"],
                [(k, v["p50_ms"], v["p90_ms"], v["mean_ms"], v["runs"]) for k, v in report["stages"].items()])
    typer.echo("")
    print_table(["model", "precision", "bytes", "sha256"],
                [(v["file"], v["precision"], v["bytes"], v["sha256"][:16]) for v in report["models"].values()])
    if "int8_speedup_vs_float" in report:
        typer.echo(f"\nint8 vs float: {report['int8_speedup_vs_float']:.2f}x faster, "
                   f"{report['int8_size_ratio_vs_float']:.2f}x the size, "
                   f"embedding cosine {report['int8_vs_float_embedding_cosine']:.4f}")
    if "score_background_cost_vs_without" in report:
        typer.echo(f"learned scorer with its background: {report['score_background_cost_vs_without']:.2f}x the time "
                   "of the same scorer without it")
    if "learned_cleaning_cost_vs_classic" in report:
        typer.echo(f"learned cleaning (int8): {report['learned_cleaning_cost_vs_classic']:.2f}x the time of classic "
                   "cleaning alone" + (f"; the int8 cleaner {report['cleaner_int8_speedup_vs_float']:.2f}x faster "
                                       "than its float self" if "cleaner_int8_speedup_vs_float" in report else ""))
    if "query_rotations_cost_vs_upright" in report:
        typer.echo(f"a query at the rotations {report['query_rotations']}: "
                   f"{report['query_rotations_cost_vs_upright']:.2f}x the time of an upright one")
        typer.echo(f"end to end (decode+describe at every rotation+score, p50): {report['end_to_end_p50_ms']:.2f} ms")
    else:
        typer.echo(f"end to end (decode+normalise+embed+score, p50): {report['end_to_end_p50_ms']:.2f} ms")
    if "pages" in report:
        typer.echo(f"detect_page stages: {report['pages']} {report['pages_source']}")
    if "detector_int8_speedup_vs_float" in report:
        typer.echo(f"detector on a page, int8 vs float: {report['detector_int8_speedup_vs_float']:.2f}x faster")
    if "rescored_detector_int8_speedup_vs_float" in report:
        typer.echo(f"detector with its rescorer, int8 vs float: "
                   f"{report['rescored_detector_int8_speedup_vs_float']:.2f}x faster")
