"""``sigedge evaluate``: read a labels CSV, embed every image, run the protocol, report."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from .cli_common import emit, print_table, progress
from .errors import SigedgeError, UsageError
from .evaluate import (EvaluationReport, ProtocolScores, bootstrap_over_writers, protocol_scores, report_from_scores,
                       stack_variants)

__all__ = ["read_labels", "ScoredProtocol", "score_protocol", "run_evaluation", "over_draws", "plot_scores"]

log = logging.getLogger(__name__)


def read_labels(labels: Path) -> list[tuple[Path, str, str]]:
    """(absolute path, writer, kind) rows of an evaluation CSV; paths are relative to the CSV."""
    if not labels.is_file():
        raise UsageError(f"{labels}: no such labels file")
    rows = []
    with open(labels, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "writer", "kind"} - set(reader.fieldnames or [])
        if missing:
            raise UsageError(f"{labels}: missing column(s) {', '.join(sorted(missing))} (need path,writer,kind)")
        for k, row in enumerate(reader, start=2):
            kind = row["kind"].strip().lower()
            if kind not in ("genuine", "forgery"):
                raise UsageError(f"{labels}:{k}: kind must be genuine or forgery, not {row['kind']!r}")
            rows.append(((labels.parent / row["path"]).resolve(), row["writer"].strip(), kind))
    if not rows:
        raise UsageError(f"{labels}: no rows")
    return rows


@dataclass
class ScoredProtocol:
    """What :func:`score_protocol` measured: the scores of reference draw ``seed``, and what
    it takes to score other draws the same way (:func:`over_draws`)."""

    scores: ProtocolScores
    vectors: np.ndarray
    writers: list[str]
    kinds: list[str]
    fusion: str
    scoring: dict
    images: int
    failures: list[dict]


def score_protocol(labels: Path, pipeline, *, refs: int, seed: int, fusion: str | None = None,
                   show_progress: bool = False) -> ScoredProtocol:
    """Describe every image of a labels CSV as verification does (each query at every query
    rotation) and score the protocol's trials with the bundle's scorer, as ``sigedge evaluate``."""
    rows = read_labels(labels)
    described, writers, kinds, failures = [], [], [], []
    upright = pipeline.query_rotations.index(0.0)  # references are enrolled as they are
    for path, writer, kind in progress(rows, "embedding", show_progress):
        try:
            described.append(pipeline.describe_query(path))  # each image at every query rotation
        except SigedgeError as exc:
            failures.append({"path": str(path), "error": str(exc)})
            log.warning("skipped %s: %s", path, exc)
            continue
        writers.append(writer)
        kinds.append(kind)
    if not described:
        raise UsageError(f"{labels}: no usable image")
    vectors = np.stack([d[upright].embedding for d in described])
    variants = stack_variants(described)
    # the bundle's normalisation and scorer were fitted and calibrated for its own fusion only
    same_fusion = (fusion or pipeline.fusion) == pipeline.fusion
    scoring = {"normalisation": pipeline.normalisation if same_fusion else None,
               "scorer": pipeline.scorer if same_fusion else None, "ink": variants[upright][1],
               "query_variants": variants}
    fusion = fusion or pipeline.fusion
    scores = protocol_scores(vectors, writers, kinds, references=refs, seed=seed, fusion=fusion, **scoring)
    if scores.writers < 2:
        raise UsageError(f"need at least two writers with more than {refs} genuine signatures")
    return ScoredProtocol(scores, vectors, writers, kinds, fusion, scoring, len(rows), failures)


def run_evaluation(labels: Path, *, refs: int, seed: int, fusion: str | None, plot: Path | None, as_json: bool,
                   pipeline, draws: int = 1, bootstrap: int = 0) -> EvaluationReport:
    measured = score_protocol(labels, pipeline, refs=refs, seed=seed, fusion=fusion, show_progress=not as_json)
    scores, scoring, fusion, failures = measured.scores, measured.scoring, measured.fusion, measured.failures
    report = report_from_scores(scores, refs)
    # the threshold on the scale the scores were made on
    t, operating_point = pipeline.threshold_for("learned" if scoring["scorer"] is not None else "cosine")
    report.extra.update({
        "labels": str(labels),
        "model_sha256": pipeline.model_sha256,
        "precision": pipeline.options.precision,
        "fusion": fusion,
        "scorer": "learned" if scoring["scorer"] is not None else "cosine",
        "query_rotations": list(pipeline.query_rotations),
        "seed": seed,
        "images": measured.images,
        "skipped": failures,
        "shipped_threshold": {"name": operating_point, "value": t,
                              "frr": float(np.mean(scores.genuine < t)),
                              "far_skilled": float(np.mean(scores.skilled >= t)) if len(scores.skilled) else None,
                              "far_random": float(np.mean(scores.random >= t))},
    })
    if draws > 1:
        report.extra["draws"] = over_draws(measured.vectors, measured.writers, measured.kinds, refs, seed, draws, fusion,
                                           **scoring)
    if bootstrap > 0:
        report.extra["bootstrap"] = bootstrap_over_writers(scores, resamples=bootstrap, seed=seed)
    if plot is not None:
        plot_scores(scores, report, plot)
        report.extra["plot"] = str(plot)

    def human() -> None:
        typer.echo(f"{labels}: {report.writers} writers, {refs} references each, fusion {fusion}, "
                   f"{pipeline.options.precision} embedder {pipeline.model_sha256[:12]}, "
                   f"{report.extra['scorer']} scorer")
        pct = lambda v: None if v is None else f"{100 * v:.2f} %"  # noqa: E731
        print_table(["negatives", "pairs", "EER", "FRR@FAR1%", "FRR@FAR10%", "AUC"], [
            ("skilled", report.n_skilled, pct(report.eer_skilled), pct(report.frr_at_far1_skilled),
             pct(report.frr_at_far10_skilled), report.auc_skilled),
            ("random", report.n_random, pct(report.eer_random), pct(report.frr_at_far1_random),
             pct(report.frr_at_far10_random), report.auc_random),
        ])
        st = report.extra["shipped_threshold"]
        typer.echo(f"at the shipped threshold {st['name']}={st['value']:.4f}: FRR {pct(st['frr'])}, "
                   f"FAR skilled {pct(st['far_skilled'])}, FAR random {pct(st['far_random'])}")
        if draws > 1:
            d = report.extra["draws"]
            for name in ("skilled", "random"):
                per = d[f"eer_{name}_per_draw"]
                if per:
                    typer.echo(f"{name} EER over {draws} reference draws (seeds {seed}-{seed + draws - 1}): mean "
                               f"{pct(d[f'eer_{name}_mean'])}, range {pct(min(per))} to {pct(max(per))}")
        if bootstrap > 0:
            b = report.extra["bootstrap"]
            for name in ("skilled", "random"):
                interval = b[f"eer_{name}_interval"]
                skipped = b[f"eer_{name}_skipped"]
                note = f" ({skipped} of them skipped: no {name} trial drawn)" if skipped else ""
                if interval is not None:
                    typer.echo(f"{name} EER, {100 * b['level']:.0f} % interval over {bootstrap} resamples of the "
                               f"writers{note}: {pct(interval[0])} to {pct(interval[1])}")
        if failures:
            typer.echo(f"skipped {len(failures)} unreadable image(s); see --json for the list")
        if plot is not None:
            typer.echo(f"wrote {plot}")

    emit(report, as_json, human)
    return report


def over_draws(embeddings: np.ndarray, writers: list[str], kinds: list[str], refs: int, seed: int, draws: int,
               fusion: str, normalisation=None, **scoring) -> dict:
    """EERs of the protocol for ``draws`` reference draws (seeds ``seed`` .. ``seed + draws - 1``);
    ``scoring``: a learned scorer and the ink statistics, as :func:`protocol_scores` takes them."""
    reports = [report_from_scores(protocol_scores(embeddings, writers, kinds, references=refs, seed=seed + d,
                                                  fusion=fusion, normalisation=normalisation, **scoring), refs)
               for d in range(draws)]
    skilled = [r.eer_skilled for r in reports if r.eer_skilled is not None]
    random_ = [r.eer_random for r in reports]
    return {"n": draws, "seeds": [seed + d for d in range(draws)],
            "eer_skilled_per_draw": skilled, "eer_random_per_draw": random_,
            "eer_skilled_mean": float(np.mean(skilled)) if skilled else None,
            "eer_random_mean": float(np.mean(random_))}


def plot_scores(scores: ProtocolScores, report: EvaluationReport, out: Path) -> None:
    """ROC and DET curves plus score histograms, one PNG (needs the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'sigedge[plot]'") from None
    from .metrics import roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    sets = [("random", scores.random, report.eer_random)]
    if len(scores.skilled):
        sets.insert(0, ("skilled", scores.skilled, report.eer_skilled))
    for name, imp, eer in sets:
        roc = roc_curve(scores.genuine, imp)
        axes[0].plot(roc.far, 1 - roc.frr, label=f"{name} (EER {100 * eer:.1f} %)")
        axes[1].plot(np.clip(roc.far, 1e-4, 1) * 100, np.clip(roc.frr, 1e-4, 1) * 100, label=name)
    axes[0].set(xlabel="false accept rate", ylabel="true accept rate", title="ROC")
    axes[1].set(xscale="log", yscale="log", xlabel="FAR %", ylabel="FRR %", title="DET")
    bins = np.linspace(min(scores.genuine.min(), scores.random.min()), 1, 50)
    axes[2].hist(scores.genuine, bins, alpha=0.6, density=True, label="genuine")
    for name, imp, _ in sets:
        axes[2].hist(imp, bins, alpha=0.5, density=True, label=name)
    axes[2].axvline(report.extra.get("shipped_threshold", {}).get("value", np.nan), color="k", ls="--", label="threshold")
    axes[2].set(xlabel=f"score ({report.extra.get('scorer', 'cosine')})", title="score histograms")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
