"""Export a trained cleaner run into a sigedge model bundle.

    TF_USE_LEGACY_KERAS=1 python -m export.export_cleaner --run runs/cleaner --out sigedge/models/default

(or ``sigedge export --int8 --model cleaner --run runs/cleaner --out BUNDLE``). Writes
``cleaner_int8.tflite`` (full-integer, from the quantization-aware weights, with generated
training pairs as the representative set) and ``cleaner_float.tflite``, and runs both
through the runtime's interpreter on:

* pairs made from the *training* writers, pages and cheque templates (a seed training never
  drew), to choose the probability threshold: the one with the best F1 of the signature
  class over ink pixels, for each precision;
* the validation pairs of ``training/train_cleaner.py`` (validation writers, pages and
  cheque templates), for the reported precision, recall and F1 at that threshold.

Adds the ``cleaner`` / ``cleaner_float`` entries and a ``cleaning`` report to the bundle's
``manifest.json``, leaving the other entries as they are. Where the cleaner is applied
(``cleaning.min_removed_share``) is a separate, optional step: ``python -m
export.fit_cleaner_gate --bundle BUNDLE`` (measured, not adopted for the shipped cleaner; see
the model card).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

from export.export_embedder import convert_float, convert_int8, file_fields  # noqa: E402
from export.provenance import provenance, training_command  # noqa: E402

log = logging.getLogger("export_cleaner")

THRESHOLD_SEED = 9090  # training-source pairs for the threshold; training drew other seeds
THRESHOLD_PAIRS = 384
REPRESENTATIVE = 200
THRESHOLD_GRID = np.round(np.arange(0.1, 0.91, 0.05), 2)
#: Canvas pixels by which the kept mask is grown on the crop (``cleaning.grow``).
GROW = 1.0
INPUT_NORMALISATION = ("sigedge.clean.cleaner_canvas: background-flattened gray crop fitted with its aspect kept "
                       "and centred, paper 0, ink 1")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run directory (float.h5, qat.h5, state.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory (must hold a manifest.json)")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sigedge-train")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    export(args.run, args.out, data_root=args.data, cache=args.cache)


def probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """The TFLite model's signature-ink probabilities for canvases (N, H, W, 1), run one at a
    time through the runtime's interpreter, as ``sigedge.clean.LearnedCleaner`` runs it."""
    from sigedge.interpreter import TFLiteModel

    m = TFLiteModel(path, threads=2)
    logits = np.stack([m(c) for c in x])
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))


def best_threshold(prob: np.ndarray, target: np.ndarray, canvas: np.ndarray) -> tuple[float, dict]:
    from training.train_cleaner import ink_f1

    scored = [(ink_f1(prob, target, canvas, float(t)), float(t)) for t in THRESHOLD_GRID]
    metrics, t = max(scored, key=lambda s: s[0]["f1"])
    return t, metrics


def entry(path: Path, precision: str, threshold: float, height: int, width: int) -> dict:
    return {
        **file_fields(path, precision),
        "input": {"name": "image", "height": height, "width": width, "channels": 1, "layout": "NHWC",
                  "range": [0.0, 1.0], "normalization": INPUT_NORMALISATION},
        "output": {"name": "signature_ink", "dim": 1, "kind": "logit"},
        "metric": "probability",
        "cleaning": {"threshold": threshold, "grow": GROW,
                     "marks": "signature ink; every other ink pixel of the crop is painted white"},
    }


def export(run: Path, out: Path, data_root: Path | None = None,
           cache: Path = Path.home() / ".cache" / "sigedge-train") -> dict:
    from training import data as D
    from training.cleansynth import CleanerSynth
    from training.docsynth import renderer_provenance
    from training.train_cleaner import HEIGHT, WIDTH, build_cleaner, gate_writers, ink_f1, load_qat_cleaner, \
        signature_pool, sources, validation_set

    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{out}: no manifest.json; export the embedder into it first")
    state = json.loads((run / "state.json").read_text())
    cfg = state.get("config", {})
    ns = SimpleNamespace(data=data_root or D.DEFAULT_DATA_ROOT, cache=cache, seed=int(cfg.get("seed", 1)),
                         limit=int(cfg.get("limit", 0)), val_pairs=int(cfg.get("val_pairs", 384)))
    samples = D.load_all(ns.data)
    train_writers, _ = D.split_writers(samples)
    held_fraction = float(cfg.get("gate_writers", 0) or 0)
    held_out = gate_writers(samples, train_writers, held_fraction)
    # a run that kept writers out of its pool has its threshold chosen on their signatures,
    # which it never saw, as a new writer's will be
    pool = signature_pool(ns, held_out or train_writers, f"heldout{held_fraction:g}" if held_out else "train",
                          ns.limit or int(cfg.get("signatures", 3000)))
    train_x, train_y = CleanerSynth(pool, sources(ns, "train"), seed=THRESHOLD_SEED, height=HEIGHT,
                                    width=WIDTH).batch(THRESHOLD_PAIRS)
    val_x, val_y = validation_set(ns)

    float_model = build_cleaner()
    float_model.load_weights(run / "float.h5")
    qat = load_qat_cleaner(run)
    tmp = Path(tempfile.mkdtemp(prefix="sigedge-export-cleaner-"))
    try:
        paths = {"cleaner": tmp / "cleaner_int8.tflite", "cleaner_float": tmp / "cleaner_float.tflite"}
        paths["cleaner"].write_bytes(convert_int8(qat, train_x[:REPRESENTATIVE, ..., 0]))
        paths["cleaner_float"].write_bytes(convert_float(float_model))
        report, entries = {}, {}
        for role, path in paths.items():
            threshold, train_metrics = best_threshold(probabilities(path, train_x), train_y, train_x)
            val_metrics = ink_f1(probabilities(path, val_x), val_y, val_x, threshold)
            report[role] = {"bytes": path.stat().st_size, "threshold": threshold,
                            "training_pairs": train_metrics, "validation_pairs": val_metrics}
            log.info("%s: threshold %.2f, training pairs F1 %.4f, validation pairs %s", role, threshold,
                     train_metrics["f1"], val_metrics)
        manifest = json.loads(manifest_path.read_text())
        for role, path in paths.items():
            old = manifest["models"].get(role)
            if old and (out / old["file"]).exists():
                (out / old["file"]).unlink()
            shutil.copy2(path, out / path.name)
            entries[role] = entry(out / path.name, "int8" if role == "cleaner" else "float32",
                                  report[role]["threshold"], HEIGHT, WIDTH)
        manifest["models"].update(entries)
        manifest["cleaning"] = {
            "training": {"command": training_command("training.train_cleaner", run, cfg),
                         **provenance(run),
                         "architecture": "encoder-decoder, depthwise-separable, 128x256x1 -> 128x256x1 logit",
                         "data": "signatures of the embedder's training writers (split seed %d) on windows of the "
                                 "training pages of documents_tobacco800, SSBI cheque templates 1-7 and synthetic "
                                 "clutter" % D.SPLIT_SEED,
                         "gate_writers": held_fraction, "gate_writers_held_out": len(held_out),
                         "synthetic_signatures": int(cfg.get("synthetic_signatures", 0) or 0),
                         "augment_ink": float(cfg.get("augment_ink", 0) or 0)},
            # synthetic clutter draws printed text in the host's fonts (training/docsynth.py)
            "generated_pages": renderer_provenance(),
            "threshold_chosen_on": "pairs from the %s, pages and cheque templates (seed %d)"
                                   % ("training writers held out of the pool" if held_out else "training writers",
                                      THRESHOLD_SEED),
            "report": report,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("added the cleaner to %s", out)
        return manifest["cleaning"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
