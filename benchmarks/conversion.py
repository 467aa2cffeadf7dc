"""The exporters' TFLite conversion against Keras's own, on the shipped models' committed weights.

    TF_USE_LEGACY_KERAS=1 python benchmarks/conversion.py --out benchmarks/results/conversion.json

For each shipped model (embedder, detector, first rescorer, cleaner) the float and QAT weights
of its committed checkpoint are converted twice in this process: by
``tf.lite.TFLiteConverter.from_keras_model`` (how the shipped files were made) and by the
exporters' ``convert_float`` / ``convert_int8`` (one saved ``tf.function``). Reports the time of
each, whether the two files give the same tensors on generated inputs (largest absolute
difference, dequantised), whether their signatures agree, how far the exporter's file is from
the shipped file on the same inputs, and whether each one's bytes equal the shipped file's.
Each way converts twice, in the order Keras, exporter, exporter, Keras, so that neither
alone pays the process's first-use costs; the times are the means of the two runs (both
kept), the ratio theirs. The int8 calibration set is the same generated images for both; the
exporter's int8 conversion is run once more on them 255 times brighter
(``bytes_follow_the_calibration_set``: whether that moved any byte of the quantization-aware
model, whose own ranges set the scales).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("conversion")
CHECKPOINTS = ROOT / "training" / "checkpoints"
SHIPPED = ROOT / "sigedge" / "models" / "default"


def embedder_models():
    from training.model import build_model, quantize_aware

    run = CHECKPOINTS / "embedder-v2"
    float_model = build_model("mobilenetv2", 128, 256, 0.35, 128)
    float_model.load_weights(run / "float.h5")
    qat = quantize_aware(build_model("mobilenetv2", 128, 256, 0.35, 128))
    qat.load_weights(run / "qat.h5")
    return float_model, qat


def detector_models():
    from export.export_detector import SIZE
    from training.detector_model import build_detector, quantize_aware

    run = CHECKPOINTS / "detector-v2"
    float_model = build_detector(SIZE, 0.35)
    float_model.load_weights(run / "float.h5")
    qat = quantize_aware(build_detector(SIZE, 0.35))
    qat.load_weights(run / "qat.h5")
    return float_model, qat


def rescorer_models():
    from training.train_rescorer import build_rescorer, load_qat_rescorer

    run = CHECKPOINTS / "rescorer-v1"
    float_model = build_rescorer()
    float_model.load_weights(run / "float.h5")
    return float_model, load_qat_rescorer(run)


def cleaner_models():
    from training.train_cleaner import build_cleaner, load_qat_cleaner

    run = CHECKPOINTS / "cleaner-v1"
    float_model = build_cleaner()
    float_model.load_weights(run / "float.h5")
    return float_model, load_qat_cleaner(run)


MODELS = {  # name: (models, shipped float file, shipped int8 file)
    "embedder": (embedder_models, "embedder_float.tflite", "embedder_int8.tflite"),
    "detector": (detector_models, "detector_float.tflite", "detector_int8.tflite"),
    "rescorer": (rescorer_models, "rescorer_float.tflite", "rescorer_int8.tflite"),
    "cleaner": (cleaner_models, "cleaner_float.tflite", "cleaner_int8.tflite"),
}


def keras_float(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def keras_int8(model, representative: np.ndarray) -> bytes:
    """The exporters' int8 settings, through ``from_keras_model`` (the shipped files' path)."""
    import tensorflow as tf

    from export.export_embedder import full_integer

    return full_integer(tf.lite.TFLiteConverter.from_keras_model(model), representative).convert()


def outputs(model_bytes: bytes, inputs: np.ndarray) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """The signature and the dequantised outputs of each input, through the runtime's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    runner = interp.get_signature_runner("serving_default")
    detail = interp.get_input_details()[0]
    scale, zero = detail["quantization"]
    signature = interp.get_signature_list()
    input_name = signature["serving_default"]["inputs"][0]
    out_details = runner.get_output_details()
    results = []
    for x in inputs:
        feed = (np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8) if scale
                else x.astype(np.float32))
        raw = runner(**{input_name: feed[None, ..., None]})
        results.append({k: dequantised(v, out_details[k]["quantization"]) for k, v in raw.items()})
    return signature, results


def dequantised(y: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    scale, zero = quantization
    return (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)


def largest_difference(a: list[dict], b: list[dict]) -> float:
    return float(max(np.abs(x[k] - y[k]).max() for x, y in zip(a, b) for k in x))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def measure(name: str, inputs_per_model: int, seed: int) -> dict:
    from export.export_embedder import convert_float, convert_int8

    build, float_file, int8_file = MODELS[name]
    float_model, qat = build()
    h, w = float_model.input_shape[1:3]
    rng = np.random.default_rng(seed)
    # ink-like inputs: sparse strokes of 1 on paper 0, as every model's input is
    inputs = (rng.random((inputs_per_model, h, w)) < 0.08).astype(np.float32)
    row = {}
    for precision, keras_way, ours, shipped in [
            ("float", lambda: keras_float(float_model), lambda: convert_float(float_model), float_file),
            ("int8", lambda: keras_int8(qat, inputs), lambda: convert_int8(qat, inputs), int8_file)]:
        # ABBA: each way runs twice, first and last in turn, so neither alone pays the
        # process's first-use costs; each way's files are compared from its first run
        timed, shas, files = {"keras": [], "exporter": []}, {"keras": set(), "exporter": set()}, {}
        for way in ("keras", "exporter", "exporter", "keras"):
            t0 = time.perf_counter()
            data = keras_way() if way == "keras" else ours()
            timed[way].append(time.perf_counter() - t0)
            shas[way].add(sha256(data))
            files.setdefault(way, data)
        a, b = files["keras"], files["exporter"]
        keras_s, exporter_s = float(np.mean(timed["keras"])), float(np.mean(timed["exporter"]))
        sig_a, out_a = outputs(a, inputs)
        sig_b, out_b = outputs(b, inputs)
        shipped_bytes = (SHIPPED / shipped).read_bytes()
        shipped_sha = sha256(shipped_bytes)
        row[precision] = {
            "keras_seconds": round(keras_s, 1), "exporter_seconds": round(exporter_s, 1),
            "keras_runs": [round(t, 1) for t in timed["keras"]], "exporter_runs": [round(t, 1) for t in timed["exporter"]],
            "speedup": round(keras_s / exporter_s, 2), "keras_bytes": len(a), "exporter_bytes": len(b),
            "same_bytes_both_runs": {way: len(v) == 1 for way, v in shas.items()},
            "largest_output_difference": largest_difference(out_a, out_b),
            "same_signature": sig_a == sig_b, "signature": sig_b,
            "largest_difference_to_shipped": largest_difference(outputs(shipped_bytes, inputs)[1], out_b),
            "keras_bytes_are_shipped": sha256(a) == shipped_sha, "exporter_bytes_are_shipped": sha256(b) == shipped_sha,
            "keras_sha256": sha256(a), "exporter_sha256": sha256(b), "shipped_sha256": shipped_sha,
        }
        if precision == "int8":  # calibrated on the inputs 255 times too bright: does any byte move?
            row[precision]["bytes_follow_the_calibration_set"] = sha256(convert_int8(qat, inputs * 255.0)) != sha256(b)
        log.info("%s %s: keras %.1f s, exporter %.1f s (means of two), largest difference %g", name, precision,
                 keras_s, exporter_s, row[precision]["largest_output_difference"])
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    p.add_argument("--inputs", type=int, default=16, help="generated inputs each model is compared on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    import tensorflow as tf

    report = {"command": "python benchmarks/conversion.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "tensorflow": tf.__version__, "inputs": args.inputs,
              "models": {n: measure(n, args.inputs, args.seed) for n in names}}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
