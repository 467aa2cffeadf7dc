"""Choose where the learned cleaner is applied: its ``cleaning.min_removed_share`` gate.

    python -m export.fit_cleaner_gate [--bundle sigedge/models/default]

The learned cleaner is applied to a crop only when it would remove at least a share of the
crop's ink (``sigedge.clean.CleanOptions.min_removed_share``); below it, the crop gets the
classic rules alone. Why: on clean real scans the cleaner's few mistakes (a heavy or straight
stretch of a stroke taken for print, the end of a stroke at the crop's edge) move the ink's
bounding box and so the whole normalised signature; on a cluttered crop it removes far more.

The gate is chosen on the embedder's **training** writers of sigcomp2011_dutch and ssbi (the
same split seed) that the cleaner's run kept out of its pasting pool (``--gate-writers``; all
training writers for a run that kept none, whose clean scans the cleaner then knows too well:
cleaner v1, which pasted every training writer, took under 2.6 % of the ink of 90 % of the
SigComp training writers' scans, but under 11 % of the validation writers') and the **training** backgrounds (pages of documents_tobacco800, cheque
templates 1-7, synthetic clutter), never on validation writers: for each signature, its real
scan as it came and its crop on a page, a cheque and synthetic clutter; the gate kept is the
one whose cleaned crops embed closest (mean cosine, the bundle's embedder of the cleaner's
precision, upright) to the same signature without clutter cleaned classically (the scan
itself; for a composite, the same composite on plain paper). Verification EERs on these
writers cannot choose anything: the embedder was trained on them (EER 0, see the model card).
Writes the gate into the ``cleaner`` and ``cleaner_float`` entries of the manifest and the
table into ``cleaning.gate``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("fit_cleaner_gate")

GATE_GRID = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3)
GATE_SEED = 4242  # the composites' draws; training, the threshold and the benchmark drew others
GATE_IMAGES = 100  # signatures a collection
COLLECTIONS = ("sigcomp2011_dutch", "ssbi")
KINDS = ("original", "page", "cheque", "synthetic")
ROLES = {"cleaner": "int8", "cleaner_float": "float"}


def gate_samples(data_root: Path, images: int, held_fraction: float = 0.0,
                 seed: int = GATE_SEED) -> list[tuple[str, Path]]:
    """(collection, path) of up to ``images`` signatures of each collection: of the training
    writers the cleaner's run kept out of its pool (``held_fraction``, its ``--gate-writers``),
    or of all training writers for a run that kept none."""
    from training import data as D
    from training.train_cleaner import gate_writers

    samples = D.load_all(data_root)
    train_writers, _ = D.split_writers(samples)
    writers = gate_writers(samples, train_writers, held_fraction) or train_writers
    rng = np.random.default_rng(seed)
    out = []
    for name in COLLECTIONS:
        paths = sorted(s.path for s in samples if s.dataset == name and s.writer in writers)
        if paths:
            out += [(name, paths[i]) for i in sorted(rng.choice(len(paths), min(images, len(paths)), replace=False))]
    return out


def measure(pipes: dict, samples: list[tuple[str, Path]], sources, seed: int = GATE_SEED) -> list[dict]:
    """For each signature and kind: the share of ink the learned cleaner removes, and the
    cosine to the uncluttered classic embedding of the crop cleaned classically and learned."""
    from sigedge.clean import clean_signature_with_share
    from sigedge.errors import SigedgeError
    from sigedge.imageio import load_image
    from training.cleansynth import CleanerSynth
    from training.docsynth import SignaturePool, signature_ink

    classic, learned, uncleaned = pipes["classic"], pipes["learned"], pipes["uncleaned"]
    rows = []
    for j, (name, path) in enumerate(samples):
        scan = load_image(path)
        ink = signature_ink(scan, max_width=480)
        if ink is None:
            continue
        crops = {"original": scan}
        for kind in ("plain", "page", "cheque", "synthetic"):
            synth = CleanerSynth(SignaturePool([]), sources, seed=seed + j)  # same draws for every kind
            crops[kind] = synth.crop(kind, ink=ink)[0]
        try:
            refs = {"original": classic.describe(scan).embedding, "plain": classic.describe(crops["plain"]).embedding}
        except SigedgeError:
            continue
        for kind in KINDS:
            crop = crops[kind]
            # the learned pipeline's own cleaning (ungated), run once for the share and the crop
            cleaned, removed = clean_signature_with_share(crop, learned.options.clean_options, learned.cleaner)
            ref = refs["original" if kind == "original" else "plain"]
            cos = {}
            for method, describe in (("classic", lambda: classic.describe(crop)),
                                     ("learned", lambda: uncleaned.describe(cleaned))):
                try:
                    cos[method] = float(np.dot(describe().embedding, ref))
                except SigedgeError:  # nothing left: as far from the reference as can be
                    cos[method] = -1.0
            rows.append({"collection": name, "kind": kind, "removed": removed, **cos})
    return rows


def choose_gate(rows: list[dict]) -> tuple[float, dict]:
    """The gate with the highest mean cosine (each collection and kind weighing the same)."""
    table = {}
    for gate in GATE_GRID:
        cells = {}
        for name in COLLECTIONS:
            for kind in KINDS:
                sel = [r for r in rows if r["collection"] == name and r["kind"] == kind]
                if sel:
                    cells[f"{name}/{kind}"] = {
                        "mean_cosine": float(np.mean([r["learned"] if r["removed"] >= gate else r["classic"] for r in sel])),
                        "learned_applied": float(np.mean([r["removed"] >= gate for r in sel])),
                        "crops": len(sel)}
        table[str(gate)] = {"mean_cosine": float(np.mean([c["mean_cosine"] for c in cells.values()])) if cells else None,
                            "cells": cells}
    scored = [(table[str(g)]["mean_cosine"], -i) for i, g in enumerate(GATE_GRID) if table[str(g)]["mean_cosine"] is not None]
    if not scored:
        return 0.0, table
    best = GATE_GRID[-max(scored)[1]]  # ties go to the smaller gate
    return float(best), table


def fit(bundle: Path, data_root: Path | None = None, images: int = GATE_IMAGES) -> dict:
    """Fit the gate of each cleaner entry of ``bundle`` and write it into the manifest."""
    from sigedge.clean import CleanOptions
    from sigedge.pipeline import Pipeline, PipelineOptions
    from training import data as D
    from training import detector_data as DD
    from training.cleansynth import TRAIN_CHEQUES, ClutterSources

    data_root = data_root or D.DEFAULT_DATA_ROOT
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    train_pages, _ = DD.split_documents(data_root)
    sources = ClutterSources.load(data_root, train_pages, range(TRAIN_CHEQUES))
    held = float(manifest.get("cleaning", {}).get("training", {}).get("gate_writers", 0) or 0)
    samples = gate_samples(data_root, images, held)
    whose = "the training writers held out of the cleaner's pool" if held else "the training writers"
    report = {"chosen_on": f"{len(samples)} signatures of {whose} of {', '.join(COLLECTIONS)} "
                           f"(split seed {D.SPLIT_SEED}) on training backgrounds, seed {GATE_SEED}",
              "objective": "mean cosine of the cleaned crop to the same signature uncluttered, cleaned classically",
              "command": f"python -m export.fit_cleaner_gate --bundle {bundle}", "roles": {}}
    for role, precision in ROLES.items():
        if role not in manifest["models"]:
            continue
        pipes = {"classic": Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="classic"),
                                                             precision=precision)),
                 "learned": Pipeline(bundle, PipelineOptions(
                     clean_options=CleanOptions(method="learned", min_removed_share=0.0), precision=precision)),
                 # embeds crops the learned pipeline's cleaning already cleaned
                 "uncleaned": Pipeline(bundle, PipelineOptions(clean=False, precision=precision))}
        gate, table = choose_gate(measure(pipes, samples, sources))
        manifest["models"][role]["cleaning"]["min_removed_share"] = gate
        report["roles"][role] = {"min_removed_share": gate, "grid": table}
        log.info("%s: gate %.2f (mean cosine %s; ungated %s)", role, gate, _fmt(table[str(gate)]["mean_cosine"]),
                 _fmt(table["0.0"]["mean_cosine"]))
    manifest.setdefault("cleaning", {})["gate"] = report
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def main(argv=None) -> int:
    from sigedge.bundle import default_bundle_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=default_bundle_dir())
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--images", type=int, default=GATE_IMAGES, help="training signatures a collection")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fit(args.bundle, args.data, args.images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
