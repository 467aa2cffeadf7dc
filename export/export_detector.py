"""Export a trained detector run into a sigedge model bundle.

    TF_USE_LEGACY_KERAS=1 python -m export.export_detector --run runs/detector \
        --out sigedge/models/default --int8

Writes ``detector_int8.tflite`` (full-integer, from the quantization-aware weights, with
real training pages as the representative dataset) and ``detector_float.tflite`` at
640x640, both run through the *runtime's* decoder (``sigedge.detect.Detector``) on:

* generated pages without any signature (a seed never used in training), to choose the
  score threshold: the lowest at which 95 % of them get no box (``EMPTY_PAGE_TARGET``);
* the training documents, for the F1 there at that threshold;
* the validation documents (page-disjoint), for the reported precision, recall, mAP.

Adds the ``detector`` / ``detector_float`` entries and a ``detection`` report to the
bundle's ``manifest.json``, leaving the embedder entries as they are.
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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from export.export_embedder import convert_float, convert_int8  # noqa: E402
from sigedge.bundle import ModelSpec, sha256_file  # noqa: E402
from sigedge.detect import DetectOptions, Detector, letterbox  # noqa: E402
from sigedge.detection_metrics import evaluate_detections  # noqa: E402

log = logging.getLogger("export_detector")

SIZE = 640
NMS_IOU = 0.5
NEGATIVE_PAGE_SEED = 777  # generated signature-free pages; training used other seeds
#: Share of generated signature-free pages that must come out without a box at the shipped
#: threshold. Issue 5 asks for at least 90 %; the margin covers the spread between sets of
#: generated pages. The threshold is the operating point this false-alarm budget allows,
#: chosen without any labelled page: best F1 on the training pages (the earlier rule) sat
#: high because the model is over-confident on pages it was trained on.
EMPTY_PAGE_TARGET = 0.95
THRESHOLD_GRID = np.round(np.arange(0.05, 0.95, 0.025), 3)
INPUT_NORMALISATION = "sigedge.detect.letterbox: gray page (darkest channel) letterboxed, paper 0, ink 1"


def convert(model, representative: list[np.ndarray] | None) -> bytes:
    """Float TFLite, or full-integer int8 with the representative pages."""
    if representative is None:
        return convert_float(model)
    return convert_int8(model, np.stack(representative))


def signature_output_names(path: Path) -> dict[str, str]:
    """{"heatmap": name, "box": name} from the TFLite file's serving signature."""
    from sigedge.interpreter import _interpreter_class

    _, cls = _interpreter_class()
    interp = cls(model_path=str(path))
    names = next(iter(interp.get_signature_list().values()))["outputs"]
    found = {role: [n for n in names if n.endswith(role)] for role in ("heatmap", "box")}
    if any(len(v) != 1 for v in found.values()):
        raise RuntimeError(f"{path.name}: cannot tell the outputs apart: {names}")
    return {role: v[0] for role, v in found.items()}


def entry(path: Path, precision: str, threshold: float) -> dict:
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "precision": precision,
        "input": {"name": "image", "height": SIZE, "width": SIZE, "channels": 1, "layout": "NHWC",
                  "range": [0.0, 1.0], "normalization": INPUT_NORMALISATION},
        "output": {"name": signature_output_names(path)["heatmap"]},
        "outputs": signature_output_names(path),
        "decoding": {"kind": "centre-heatmap", "stride": 8, "score_threshold": threshold, "nms_iou": NMS_IOU,
                     "heatmap": "logit", "box": "log(w/stride), log(h/stride), dx, dy"},
    }


def detector_for(path: Path, threshold: float = 0.01) -> Detector:
    spec = ModelSpec(role="detector", file=path, sha256="", precision="", input_name="image", input_height=SIZE,
                     input_width=SIZE, input_channels=1, input_range=(0.0, 1.0), output_name="", output_dim=0,
                     l2_normalize=False, metric="", raw=entry(path, "", threshold))
    return Detector(spec, threads=2, options=DetectOptions(max_detections=50))


def predict(det: Detector, pages) -> dict:
    out = {}
    for k, (gray, _) in enumerate(pages):
        found = det.detect(gray)
        out[str(k)] = (np.array([d.box for d in found], np.float64).reshape(-1, 4),
                       np.array([d.score for d in found], np.float64))
    return out


def truth(pages) -> dict:
    return {str(k): b for k, (_, b) in enumerate(pages)}


def empty_page_pass_rate(preds: dict, threshold: float) -> float:
    return float(np.mean([not np.any(s >= threshold) for _, s in preds.values()]))


def empty_page_threshold(negative_preds: dict, target: float = EMPTY_PAGE_TARGET) -> float:
    """The lowest grid threshold at which at least ``target`` of the signature-free pages get no box."""
    for t in THRESHOLD_GRID:
        if empty_page_pass_rate(negative_preds, float(t)) >= target:
            return float(t)
    return float(THRESHOLD_GRID[-1])


def latency_ms(det: Detector, page: np.ndarray, repeat: int = 20) -> float:
    canvas, _ = letterbox(page, SIZE)
    det._model(canvas[..., None])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        det._model(canvas[..., None])
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def export(run: Path, out: Path, data_root: Path | None = None, cache: Path | None = None,
           negative_pages: int = 200, int8: bool = True) -> dict:
    from training import data as D
    from training import detector_data as DD
    from training.detector_model import build_detector, quantize_aware
    from training.docsynth import PageSynth
    from training.train_detector import signature_pool

    root = data_root or D.DEFAULT_DATA_ROOT
    state = json.loads((run / "state.json").read_text())
    # runs from before --page-style existed were trained on style-1 pages
    cfg = {"page_style": "1", **state.get("config", {})}
    alpha = float(cfg.get("alpha", 0.35))
    train_names, val_names = DD.split_documents(root)
    train_pages, val_pages = DD.load_pages(root, train_names), DD.load_pages(root, val_names)

    float_model = build_detector(SIZE, alpha)
    float_model.load_weights(run / "float.h5")
    qat_model = quantize_aware(build_detector(SIZE, alpha))
    qat_model.load_weights(run / "qat.h5")
    rng = np.random.default_rng(0)
    rep = [letterbox(train_pages[i][0], SIZE)[0] for i in rng.choice(len(train_pages), min(100, len(train_pages)),
                                                                        replace=False)]

    args = argparse.Namespace(cache=cache or Path.home() / ".cache" / "sigedge-train", data=root,
                              signatures=int(cfg.get("signatures", 1500)), seed=int(cfg.get("seed", 1)))
    synth = PageSynth(signature_pool(args), seed=NEGATIVE_PAGE_SEED)
    negatives = [(synth.page(SIZE, p_empty=1.0)[0], np.zeros((0, 4))) for _ in range(negative_pages)]

    tmp = Path(tempfile.mkdtemp(prefix="sigedge-export-det-"))
    try:
        files = {"detector_float": tmp / "detector_float.tflite"}
        files["detector_float"].write_bytes(convert(float_model, None))
        if int8:
            files["detector"] = tmp / "detector_int8.tflite"
            files["detector"].write_bytes(convert(qat_model, rep))
        report, thresholds = {}, {}
        for role, path in files.items():
            det = detector_for(path)
            neg_preds = predict(det, negatives)
            thr = empty_page_threshold(neg_preds)
            neg = empty_page_pass_rate(neg_preds, thr)
            f1_train = evaluate_detections(predict(det, train_pages), truth(train_pages), score_threshold=thr).f1
            vp = predict(det, val_pages)
            val = evaluate_detections(vp, truth(val_pages), score_threshold=thr)
            thresholds[role] = thr
            report[role] = {"score_threshold": thr, "train_f1": f1_train, "validation": val.to_dict(),
                            "signature_free_pages_without_box": neg, "negative_pages": len(negatives),
                            "latency_ms_1_thread_640": latency_ms(detector_for(path), val_pages[0][0]),
                            "bytes": path.stat().st_size}
            log.info("%s: %s", role, report[role])
        out.mkdir(parents=True, exist_ok=True)
        manifest_path = out / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for role, path in files.items():
            shutil.copy2(path, out / path.name)
            manifest["models"][role] = entry(out / path.name, "int8" if role == "detector" else "float32",
                                             thresholds[role])
        if not int8:
            manifest["models"]["detector"] = dict(manifest["models"]["detector_float"])
        manifest["detection"] = {
            "training": {"command": "python -m training.train_detector --out " + str(run) + " " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in cfg.items()
                if k in ("epochs", "qat_epochs", "steps", "batch", "seed", "lr", "alpha", "synthetic_pages",
                         "synthetic_share", "ema", "init", "page_style") and v != "None"),
                "split_seed": DD.SPLIT_SEED,
                "architecture": f"MobileNetV2 alpha={alpha} + FPN-lite centre-heatmap head, stride 8, "
                                f"trained on 320x320 crops, exported at {SIZE}x{SIZE}x1",
                "data": "documents_tobacco800 training documents (page-disjoint split by document, "
                        "training/splits/tobacco800_*.txt) + synthetic pages (training/docsynth.py) with real "
                        "signatures of the embedder's training writers"},
            "threshold_rule": f"lowest score threshold (grid step 0.025) at which at least "
                              f"{EMPTY_PAGE_TARGET:.0%} of {len(negatives)} generated signature-free pages "
                              f"(training/docsynth.py, seed {NEGATIVE_PAGE_SEED}) get no box",
            "report": report,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest["detection"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run directory (float.h5, qat.h5, state.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory (with an embedder manifest)")
    p.add_argument("--int8", action="store_true", help="ship the int8 model as the detector (default: float)")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--negative-pages", type=int, default=200)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rep = export(args.run, args.out, args.data, args.cache, args.negative_pages, int8=args.int8)
    print(json.dumps(rep["report"], indent=1))


if __name__ == "__main__":
    main()
