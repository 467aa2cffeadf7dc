"""Export a trained embedder run to a sigedge model bundle.

    TF_USE_LEGACY_KERAS=1 python -m export.export_embedder --run runs/embedder \
        --out sigedge/models/default --int8

Writes ``embedder_int8.tflite`` (full-integer, from the quantization-aware model, with a
representative dataset of real training canvases) and ``embedder_float.tflite`` (the
float model of the same run, kept as the reference), checks their parity on the
validation writers (embedding cosine, EER of each), calibrates the decision thresholds on
validation writers only, and writes ``manifest.json`` and ``parity.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from export.provenance import provenance, training_command  # noqa: E402
from sigedge import __version__  # noqa: E402
from sigedge.bundle import BUNDLE_FORMAT, sha256_file  # noqa: E402
from sigedge.errors import UsageError  # noqa: E402
from sigedge.evaluate import protocol_scores, report_from_scores  # noqa: E402
from sigedge.interpreter import TFLiteModel  # noqa: E402
from sigedge.metrics import equal_error_rate, threshold_at_far  # noqa: E402
from sigedge.normalize import NormalizeOptions  # noqa: E402
from sigedge.scoring import l2_normalize  # noqa: E402

log = logging.getLogger("export_embedder")

TRAINING_DATA = [
    "sigcomp2011_dutch (ICDAR 2011 SigComp, research data, no licence stated): training writers",
    "ssbi (CC BY-NC 4.0, Khan et al. 2024): training writers",
    "cross_media_chinese (MIT, Luo et al. 2023): training writers",
]
LICENCE = ("Code: Apache-2.0. Weights: trained on research data (SigComp 2011, no licence stated) and "
           "CC BY-NC 4.0 data (SSBI): research and non-commercial use only.")


def _converter(model, workdir: Path):
    """A TFLite converter for the model's inference call (``training=False``), its signature
    named as Keras names it (input and output layer names).

    The call is saved as one ``tf.function`` with the model's variables, not as a Keras
    SavedModel: ``from_keras_model`` saves every layer's traced calls first, which took two to
    four times as long for the same tensors in other bytes (``benchmarks/conversion.py`` on the
    shipped models' weights; ``tests/test_export_conversion.py``)."""
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise ValueError(f"{model.name}: the exporters convert models of one input, not {len(model.inputs)}")
    spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype, name=model.input_names[0])

    def serve(x):
        return dict(zip(model.output_names, tf.nest.flatten(model(x, training=False)), strict=True))

    module = tf.Module()
    module.variables_to_save = list(model.variables)  # tracked, so the saved function finds them
    module.serve = tf.function(serve, input_signature=[spec])
    tf.saved_model.save(module, str(workdir), signatures={"serving_default": module.serve})
    return tf.lite.TFLiteConverter.from_saved_model(str(workdir))


def convert_float(model) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sigedge-convert-") as workdir:
        return _converter(model, Path(workdir)).convert()


def full_integer(conv, representative: np.ndarray):
    """Set a TFLite converter to full-integer int8 (input and output too), calibrated on the
    representative inputs (N, H, W): every exporter's int8 settings, in one place."""
    import tensorflow as tf

    def rep():
        for x in representative:
            yield [np.asarray(x, np.float32)[None, ..., None]]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv


def convert_int8(qat_model, representative: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sigedge-convert-") as workdir:
        return full_integer(_converter(qat_model, Path(workdir)), representative).convert()


def embed_tflite(path: Path, canvases: np.ndarray) -> np.ndarray:
    m = TFLiteModel(path, threads=2)
    return l2_normalize(np.stack([m(c[..., None].astype(np.float32) / 255.0) for c in canvases]))


def file_fields(file: Path, precision: str) -> dict:
    """The fields every manifest entry starts with: which file, its hash, size and precision."""
    return {"file": file.name, "sha256": sha256_file(file), "bytes": file.stat().st_size, "precision": precision}


def objective_description(cfg: dict) -> str:
    """The manifest's words for what the run learned, from the options its state.json recorded:
    every option that changes the objective or the classes is named (the command has the values)."""
    def number(key: str) -> int:
        return int(cfg.get(key, 0) or 0)

    def blocks(key: str, kind: str) -> str:
        return f"{cfg[key]} {kind}block{'' if number(key) == 1 else 's'}"

    if number("synthetic"):
        head = (f"CosFace (s=30, m=0.35) over {cfg['synthetic']} procedural signers (training/synthsig.py) only; "
                "forgeries of a signer as their own class")
    else:
        head = "CosFace (s=30, m=0.35) over identities; forgeries of a writer as their own class"
    parts = [head]
    if number("synthetic_mix"):
        parts.append(f"plus {cfg['synthetic_mix']} procedural signers (training/synthsig.py) as further classes, "
                     f"a share {cfg.get('synthetic_weight', '0.25')} of each batch")
    if cfg.get("mirror_writers") == "True":
        parts.append("every training identity also as its three mirror images (left-right, upside down, both), "
                     "each a class of its own, ranking blocks mirrored alike")
    if number("pair_writers"):
        parts.append("plus a soft triplet ranking loss (genuine anchor, genuine positive, skilled forgery negative, "
                     f"margin {cfg.get('pair_margin', '0.3')}) inside {blocks('pair_writers', 'writer ')} per batch")
    if number("name_pair_writers"):
        parts.append(f"plus {blocks('name_pair_writers', 'same-name ')} per batch in the ranking loss (a cross-media "
                     "identity's signatures against the same name written by other training writers)")
    if number("synthetic_mix") and number("synthetic_pair_writers"):
        parts.append(f"plus {blocks('synthetic_pair_writers', '')} of procedural genuines and forgeries per batch "
                     "in the ranking loss")
    if cfg.get("teacher") not in (None, "None"):
        parts.append(f"plus a relational distillation loss (weight {cfg.get('distill_weight', '1.0')}) "
                     f"towards the float teacher {cfg['teacher']}")
    return "; ".join(parts)


def model_entry(file: Path, precision: str, opts: NormalizeOptions, dim: int) -> dict:
    return {
        **file_fields(file, precision),
        "input": {"name": "image", "height": opts.height, "width": opts.width, "channels": 1, "layout": "NHWC",
                  "range": [0.0, 1.0],
                  "normalization": "sigedge.normalize.normalize_signature: ink canvas, paper 0, ink 1"},
        "output": {"name": "embedding", "dim": dim, "l2_normalize": True},
        "metric": "cosine",
    }


def other_models(bundle_dir: Path) -> dict:
    """What an existing bundle holds besides the embedder: ``{"models": {...}, "detection": ...}``."""
    manifest_path = bundle_dir / "manifest.json"
    kept: dict = {"models": {}}
    if not manifest_path.is_file():
        return kept
    manifest = json.loads(manifest_path.read_text())
    kept["models"] = {role: m for role, m in manifest.get("models", {}).items() if not role.startswith("embedder")}
    for report in ("detection", "cleaning"):  # the other models' reports
        if report in manifest:
            kept[report] = manifest[report]
    return kept


def calibrate(scores_by_set: dict[str, object]) -> dict:
    """Thresholds from validation writers' scores (never those the numbers are reported on)."""
    genuine = np.concatenate([s.genuine for s in scores_by_set.values()])
    skilled = np.concatenate([s.skilled for s in scores_by_set.values() if len(s.skilled)])
    random_ = np.concatenate([s.random for s in scores_by_set.values()])
    eer_s, thr_s = equal_error_rate(genuine, skilled)
    eer_r, thr_r = equal_error_rate(genuine, random_)
    return {
        "eer_skilled": thr_s,
        "eer_random": thr_r,
        "far_skilled_1pct": threshold_at_far(skilled, 0.01),
        "far_skilled_10pct": threshold_at_far(skilled, 0.10),
        "far_random_1pct": threshold_at_far(random_, 0.01),
        "far_random_0.1pct": threshold_at_far(random_, 0.001),
        "far_skilled_5pct": threshold_at_far(skilled, 0.05),
        "frr_5pct": float(np.quantile(genuine, 0.05)),
    }


def decision_band(thresholds: dict) -> dict:
    """Accept / refer / reject: accept where skilled forgeries pass at most 5 % of the time,
    reject where at most 5 % of genuine signatures fall; in between a person decides."""
    accept = max(thresholds["far_skilled_5pct"], thresholds["far_random_0.1pct"])
    reject = min(thresholds["frr_5pct"], accept)
    return {"accept": accept, "reject": reject,
            "rule": "score >= accept: accept; score < reject: reject; otherwise refer to a person",
            "chosen_by": "skilled FAR 5 % (and random FAR 0.1 %) for accept, genuine FRR 5 % for reject"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run directory (float.h5, qat.h5, state.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--int8", action="store_true", help="ship the int8 model as the embedder (default: float)")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sigedge-train")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    export(args.run, args.out, int8=args.int8, data_root=args.data, cache=args.cache)


def export(run: Path, out: Path, int8: bool = True, data_root: Path | None = None,
           cache: Path = Path.home() / ".cache" / "sigedge-train") -> dict:
    from training import data as D
    from training.model import build_model, quantize_aware

    state = json.loads((run / "state.json").read_text())
    cfg = state.get("config", {})
    h, w = int(cfg.get("height", 128)), int(cfg.get("width", 256))
    alpha, dim = float(cfg.get("alpha", 0.35)), int(cfg.get("dim", 128))
    arch = cfg.get("arch", "mobilenetv2")
    if arch != "mobilenetv2" and int8:
        raise UsageError(f"the {arch} run is a float baseline without QAT weights: export it without --int8")
    opts = NormalizeOptions(height=h, width=w)

    samples = D.load_all(data_root or D.DEFAULT_DATA_ROOT)
    train_writers, val_writers = D.split_writers(samples, fold=int(cfg.get("fold", 0)))
    train = [s for s in samples if s.writer in train_writers]
    rng = np.random.default_rng(0)
    rep_samples = [train[i] for i in sorted(rng.choice(len(train), size=min(300, len(train)), replace=False))]
    # as the model sees them (0..1). A QAT model's own ranges set its int8 scales: inputs 255
    # times brighter moved no byte in benchmarks/conversion.py (generated inputs, not these)
    representative = D.preprocess(rep_samples, opts, cache).astype(np.float32) / 255.0

    float_model = build_model(arch, h, w, alpha, dim)
    float_model.load_weights(run / "float.h5")
    if int8:
        qat_model = quantize_aware(build_model(arch, h, w, alpha, dim))
        qat_model.load_weights(run / "qat.h5")

    tmp = Path(tempfile.mkdtemp(prefix="sigedge-export-"))
    try:
        float_path = tmp / "embedder_float.tflite"
        float_path.write_bytes(convert_float(float_model))
        int8_path = tmp / "embedder_int8.tflite"
        if int8:
            int8_path.write_bytes(convert_int8(qat_model, representative))

        parity, scores_int8 = {}, {}
        for ds in ("sigcomp2011_dutch", "ssbi", "cross_media_chinese"):
            vs = [s for s in samples if s.writer in val_writers and s.dataset == ds]
            key = (lambda s: s.identity) if ds == "cross_media_chinese" else (lambda s: s.writer)
            if len({key(s) for s in vs}) < 2:
                log.info("%s: fewer than two validation identities, skipped", ds)
                continue
            canv = D.preprocess(vs, opts, cache)
            writers, kinds = [key(s) for s in vs], [s.kind for s in vs]
            ef = embed_tflite(float_path, canv)
            refs = D.EVAL_REFERENCES[ds]
            rf = report_from_scores(protocol_scores(ef, writers, kinds, refs, seed=0), refs)
            entry = {"float": {"eer_skilled": rf.eer_skilled, "eer_random": rf.eer_random}}
            if int8:
                ei = embed_tflite(int8_path, canv)
                ps = protocol_scores(ei, writers, kinds, refs, seed=0)
                ri = report_from_scores(ps, refs)
                scores_int8[ds] = ps
                cos = np.sum(ef * ei, axis=1)
                entry["int8"] = {"eer_skilled": ri.eer_skilled, "eer_random": ri.eer_random}
                entry["embedding_cosine_float_vs_int8"] = {"mean": float(cos.mean()), "min": float(cos.min())}
            else:
                scores_int8[ds] = protocol_scores(ef, writers, kinds, refs, seed=0)
            parity[ds] = entry
            log.info("%s: %s", ds, entry)

        thresholds = calibrate(scores_int8)
        out.mkdir(parents=True, exist_ok=True)
        kept = other_models(out)  # e.g. the detector: an embedder export leaves it alone
        for old in out.glob("embedder*.tflite"):
            old.unlink()
        shutil.copy2(float_path, out / float_path.name)
        models = {"embedder_float": model_entry(out / float_path.name, "float32", opts, dim)}
        if int8:
            shutil.copy2(int8_path, out / int8_path.name)
            models["embedder"] = model_entry(out / int8_path.name, "int8", opts, dim)
        else:
            models["embedder"] = dict(models["embedder_float"])
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": "sigedge-default",
            "version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "license": LICENCE,
            "training_data": TRAINING_DATA,
            "training": {"command": training_command("training.train_embedder", run, cfg), **provenance(run),
                "split_seed": D.SPLIT_SEED, "architecture": (f"MobileNetV2 alpha={alpha}, {h}x{w}x1, dense {dim}" if arch == "mobilenetv2"
                                 else f"SigNet {h}x{w}x1, fc {dim}"),
                "objective": objective_description(cfg)},
            "preprocessing": {"threshold": opts.threshold, "deskew": opts.deskew, "speck_fraction": opts.speck_fraction,
                              "min_speck_pixels": opts.min_speck_pixels, "margin": opts.margin,
                              "min_ink_pixels": opts.min_ink_pixels, "min_contrast": opts.min_contrast},
            "models": {**kept.pop("models"), **models},
            **kept,
            "verification": {
                "fusion": "mean",
                "references_calibrated": 5,
                "thresholds": thresholds,
                "default_threshold": "eer_skilled",
                "band": decision_band(thresholds),
                "calibrated_on": "validation writers of sigcomp2011_dutch, ssbi and cross_media_chinese "
                                 "(writer-disjoint from training; split seed %d)" % D.SPLIT_SEED,
            },
            "parity": parity,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("wrote bundle %s", out)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
