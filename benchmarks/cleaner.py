"""The learned cleaner against the classic one (and none), on validation writers' real signatures.

    python benchmarks/cleaner.py [--bundle DIR] [--out benchmarks/results/cleaner.json]

Every image of the validation writers of sigcomp2011_dutch and ssbi (fold 0: writers no model
was trained on) is laid, by ``training/cleansynth.py``, on each kind of background:

* ``plain``: paper only (the same ink and scan degradation, no clutter);
* ``page``: a window of a *validation* page of documents_tobacco800 (real printed text, rules);
* ``cheque``: the signature field of a *held-out* SSBI cheque template (8-10);
* ``synthetic``: drawn text, lines, boxes, grids and stamps (a seed training never drew).

Then each cleaning method runs as the pipeline runs it: ``none`` (no cleaning), ``classic``
(straight lines spanning the crop), ``learned`` (the bundle's cleaner, plus the classic rules,
applied where it removes at least the bundle's ``cleaning.min_removed_share`` of the ink, or
``--gate``'s), ``learned_ungated`` (the cleaner on every crop).

1. **Pixels**: of the crop's ink (Otsu on the flattened crop, as normalisation binarises), the
   share of the signature's ink kept, the share of the clutter's ink removed (clutter: ink more
   than 2 px from the signature's own; the blurred edges of strokes count for neither), and
   the precision of what is kept.
2. **Verification**: 5 references per writer, drawn as ``sigedge evaluate`` draws them, enrolled
   from the *plain* crops (a bank's references are on file); queries (genuine, skilled and
   random) are the crops of each kind; the bundle's shipped scoring (learned scorer, query
   rotations). EER skilled and random, and FRR at the bundle's default threshold.
   ``original`` is the real scan as it came, references and queries: what the cleaner does to
   an uncluttered crop.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sigedge.clean import CleanOptions, clean_signature  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.evaluate_cli import read_labels  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.normalize import binarize, flatten_background, to_gray  # noqa: E402
from sigedge.pipeline import Pipeline, PipelineOptions  # noqa: E402
from training import data as D  # noqa: E402
from training import detector_data as DD  # noqa: E402
from training.cleansynth import TRAIN_CHEQUES, CleanerSynth, ClutterSources  # noqa: E402
from training.docsynth import SignaturePool, signature_ink  # noqa: E402

log = logging.getLogger("cleaner_bench")

REPO = Path(__file__).resolve().parent.parent
SETS = {"sigcomp2011_dutch": REPO / "training/splits/sigcomp2011_dutch_val.csv",
        "ssbi": REPO / "training/splits/ssbi_val.csv"}
KINDS = ("plain", "page", "cheque", "synthetic")
METHODS = ("none", "classic", "learned", "learned_ungated")
SEED = 31337  # the backgrounds; training and the export's threshold drew other seeds
REFERENCES = 5


def pipelines(bundle: Path | None, precision: str = "int8", gate: float | None = None) -> dict[str, Pipeline]:
    def learned(share):
        return Pipeline(bundle, PipelineOptions(
            clean_options=CleanOptions(method="learned", min_removed_share=share), precision=precision))

    return {
        "none": Pipeline(bundle, PipelineOptions(clean=False, precision=precision)),
        "classic": Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="classic"), precision=precision)),
        "learned": learned(gate),
        "learned_ungated": learned(0.0),
    }


def composites(rows, sources: ClutterSources) -> tuple[list[dict], list[int]]:
    """For every row, its crop on each background (same ink, placement and degradation
    seed per row), with the signature's own ink mask; and the rows that made it."""
    out, kept = [], []
    for i, (path, _, _) in enumerate(rows):
        ink = signature_ink(load_image(path), max_width=480)
        if ink is None:
            continue
        crops = {}
        for kind in KINDS:
            synth = CleanerSynth(SignaturePool([]), sources, seed=SEED + i)  # same draws for every kind
            crop, target, _ = synth.crop(kind, ink=ink)
            crops[kind] = (crop, target)
        out.append(crops)
        kept.append(i)
    return out, kept


def pixel_counts(crop: np.ndarray, target: np.ndarray, pipe: Pipeline) -> np.ndarray:
    """[signature ink, signature ink kept, clutter ink, clutter ink removed] of one crop."""
    flat = flatten_background(to_gray(crop))
    ink = binarize(flat)
    if pipe.options.clean:
        cleaned = clean_signature(crop, pipe.options.clean_options, pipe.cleaner)
        removed = (cleaned == 255) & (flat != 255)
    else:
        removed = np.zeros_like(ink)
    # the blurred edges of strokes (ink within 2 px of the signature's own) count for neither
    near = cv2.dilate(target.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    sig, clutter = ink & target, ink & ~near
    return np.array([sig.sum(), (sig & ~removed).sum(), clutter.sum(), (clutter & removed).sum()], np.float64)


def describe_queries(pipe: Pipeline, images: list[np.ndarray]) -> list:
    """Every image's features at each of the pipeline's query rotations, or None where no ink
    is left; the upright entry is what :meth:`Pipeline.describe` enrols."""
    out = []
    for img in images:
        try:
            out.append(pipe.describe_query(img))
        except SigedgeError:
            out.append(None)
    return out


def verification(pipe: Pipeline, refs: list, queries: list, writers, kinds) -> dict:
    """The protocol with references enrolled upright from ``refs`` and queries scored at their
    best rotation from ``queries`` (both :func:`describe_queries` of the same rows)."""
    upright = pipe.query_rotations.index(0.0)
    ok = [i for i in range(len(refs)) if refs[i] is not None and queries[i] is not None]
    emb = np.stack([refs[i][upright].embedding for i in ok])
    ink = np.stack([refs[i][upright].ink for i in ok])
    variants = [(np.stack([queries[i][a].embedding for i in ok]), np.stack([queries[i][a].ink for i in ok]))
                for a in range(len(pipe.query_rotations))]
    ps = protocol_scores(emb, [writers[i] for i in ok], [kinds[i] for i in ok], references=REFERENCES, seed=0,
                         fusion=pipe.fusion, scorer=pipe.scorer, ink=ink, query_variants=variants)
    rep = report_from_scores(ps, REFERENCES)
    threshold = pipe.threshold
    return {"eer_skilled": rep.eer_skilled, "eer_random": rep.eer_random,
            "frr_at_default_threshold": float(np.mean(ps.genuine < threshold)),
            "far_skilled_at_default_threshold": float(np.mean(ps.skilled >= threshold)) if len(ps.skilled) else None,
            "n_genuine": rep.n_genuine, "n_skilled": rep.n_skilled, "n_random": rep.n_random,
            "images_without_ink": len(refs) - len(ok)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--data", type=Path, default=D.DEFAULT_DATA_ROOT)
    p.add_argument("--precision", choices=("int8", "float"), default="int8",
                   help="the embedder and cleaner the pipelines run (float: the bundle's float references)")
    p.add_argument("--limit", type=int, default=0, help="first N rows of each set (smoke runs)")
    p.add_argument("--gate", type=float, default=None,
                   help="the learned method's min_removed_share (default: the bundle's cleaning.min_removed_share)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cleaner.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pipes = pipelines(args.bundle, args.precision, args.gate)
    _, val_pages = DD.split_documents(args.data)
    sources = ClutterSources.load(args.data, val_pages, range(TRAIN_CHEQUES, 100))
    report: dict = {"bundle": str(pipes["learned"].bundle.directory), "seed": SEED, "references": REFERENCES,
                    "precision": args.precision, "command": "python benchmarks/cleaner.py " + " ".join(argv or sys.argv[1:]),
                    "cleaner_sha256": pipes["learned"].cleaner.spec.sha256,
                    "min_removed_share": (pipes["learned"].cleaner.min_removed_share if args.gate is None else args.gate),
                    "sets": {}}
    for name, csv_path in SETS.items():
        rows = read_labels(csv_path)
        if args.limit:
            rows = rows[: args.limit]
        t = time.time()
        crops, kept = composites(rows, sources)
        rows = [rows[i] for i in kept]
        writers, kinds = [r[1] for r in rows], [r[2] for r in rows]
        log.info("%s: %d images composited in %.0f s", name, len(rows), time.time() - t)
        entry: dict = {"images": len(rows), "pixels": {}, "verification": {}}
        originals = [load_image(r[0]) for r in rows]
        for method, pipe in pipes.items():
            for kind in KINDS:
                c = sum(pixel_counts(cr[kind][0], cr[kind][1], pipe) for cr in crops)
                entry["pixels"].setdefault(kind, {})[method] = {
                    "signature_ink_kept": c[1] / max(1.0, c[0]),
                    "clutter_ink_removed": c[3] / max(1.0, c[2]) if c[2] else None,
                    "precision_of_kept_ink": c[1] / max(1.0, c[1] + c[2] - c[3]),
                }
            described = {kind: describe_queries(pipe, [cr[kind][0] for cr in crops]) for kind in KINDS}
            for kind in KINDS:
                entry["verification"].setdefault(kind, {})[method] = verification(
                    pipe, described["plain"], described[kind], writers, kinds)
            on_file = describe_queries(pipe, originals)
            entry["verification"].setdefault("original", {})[method] = verification(
                pipe, on_file, on_file, writers, kinds)
            log.info("%s %s: %s", name, method, {k: round(v[method]["eer_skilled"] or 0, 4)
                                                  for k, v in entry["verification"].items()})
        report["sets"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    for name, entry in report["sets"].items():
        print(f"\n{name} ({entry['images']} images)")
        print(f"{'background':<10} {'method':<15} {'sig kept':>9} {'clutter rm':>10} {'precision':>9} "
              f"{'EER skilled':>11} {'EER random':>10} {'FRR@thr':>8}")
        for kind in (*KINDS, "original"):
            for method in METHODS:
                if method not in entry["verification"][kind]:
                    continue
                px = entry["pixels"].get(kind, {}).get(method)
                v = entry["verification"][kind][method]
                pxs = (f"{px['signature_ink_kept']:>9.1%} "
                       + (f"{px['clutter_ink_removed']:>10.1%} " if px["clutter_ink_removed"] is not None else f"{'-':>10} ")
                       + f"{px['precision_of_kept_ink']:>9.1%}") if px else f"{'':>9} {'':>10} {'':>9}"
                skilled = f"{v['eer_skilled']:.2%}" if v["eer_skilled"] is not None else "-"
                print(f"{kind:<10} {method:<15} {pxs} {skilled:>11} {v['eer_random']:>10.2%} "
                      f"{v['frr_at_default_threshold']:>8.1%}")


if __name__ == "__main__":
    sys.exit(main())
