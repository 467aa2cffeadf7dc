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

With ``--rescorer-run`` (a ``training/train_rescorer.py`` run) the candidate rescorer is
converted too (``rescorer_int8.tflite`` with the int8 detector, ``rescorer_float.tflite``
with the float one), each detector entry names its rescorer in a ``rescoring`` block, and
the threshold rule above is applied to the fused scores. The report then gives every
number for the detector alone and for the detector with its rescorer. ``--rescorer-run``
given several times ships an ensemble: the runs' files are ``rescorer_int8.tflite``,
``rescorer_2_int8.tflite``, ... (roles ``rescorer``, ``rescorer_2``, ...), and the runtime
averages their logits.
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

from export.export_embedder import convert_float, convert_int8, file_fields  # noqa: E402
from export.provenance import converter_versions, provenance, training_command, weights_sha256  # noqa: E402
from sigedge.bundle import spec_from_entry  # noqa: E402
from sigedge.detect import DetectOptions, Detector, letterbox, rescorer_input  # noqa: E402
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
THRESHOLD_STEP = 0.025
THRESHOLD_GRID = np.round(np.arange(0.05, 0.95, THRESHOLD_STEP), 3)
INPUT_NORMALISATION = "sigedge.detect.letterbox: gray page (darkest channel) letterboxed, paper 0, ink 1"
RESCORER_NORMALISATION = ("sigedge.detect.rescorer_input: the candidate box plus `context` of its size on every side, "
                          "cut from the detector's input canvas, fitted with its aspect kept, paper 0, ink 1")


def rescorer_files(member: int) -> dict[str, tuple[str, str]]:
    """{detector role: (rescorer role, file name)} of ensemble member ``member`` (0-based)."""
    tag = "rescorer" if member == 0 else f"rescorer_{member + 1}"
    return {"detector": (tag, f"{tag}_int8.tflite"), "detector_float": (f"{tag}_float", f"{tag}_float.tflite")}


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


def entry(path: Path, precision: str, threshold: float, rescoring: dict | None = None, size: int = SIZE) -> dict:
    e = {
        **file_fields(path, precision),
        "input": {"name": "image", "height": size, "width": size, "channels": 1, "layout": "NHWC",
                  "range": [0.0, 1.0], "normalization": INPUT_NORMALISATION},
        "output": {"name": signature_output_names(path)["heatmap"]},
        "outputs": signature_output_names(path),
        "decoding": {"kind": "centre-heatmap", "stride": 8, "score_threshold": threshold, "nms_iou": NMS_IOU,
                     "heatmap": "logit", "box": "log(w/stride), log(h/stride), dx, dy"},
    }
    if rescoring is not None:
        e["rescoring"] = rescoring
    return e


def rescorer_entry(path: Path, precision: str) -> dict:
    from training.train_rescorer import HEIGHT, WIDTH

    return {
        **file_fields(path, precision),
        "input": {"name": "crop", "height": HEIGHT, "width": WIDTH, "channels": 1, "layout": "NHWC",
                  "range": [0.0, 1.0], "normalization": RESCORER_NORMALISATION},
        "output": {"name": "signature_logit", "dim": 1, "kind": "logit"},
        "metric": "probability",
    }


def rescoring_block(roles: list[str], threshold: float) -> dict:
    from training.train_rescorer import CANDIDATE_THRESHOLD, CONTEXT, MAX_OVERLAP, MAX_RESCORED

    return {"models": list(roles), "ensemble": "mean_logit", "fusion": "geometric_mean", "candidate_threshold": CANDIDATE_THRESHOLD,
            "max_candidates": MAX_RESCORED, "max_overlap": MAX_OVERLAP, "context": CONTEXT,
            "score_threshold": threshold}


def detector_for(path: Path, threshold: float = 0.01, rescorers: list[Path] | tuple = (), size: int = SIZE) -> Detector:
    """The runtime's detector for an exported file of input ``size`` (with its rescorer files, if given)."""
    roles = [f"rescorer_{k}" for k in range(len(rescorers))]
    specs = [spec_from_entry(r.parent, role, rescorer_entry(r, "")) for role, r in zip(roles, rescorers)]
    block = rescoring_block(roles, threshold) if rescorers else None
    spec = spec_from_entry(path.parent, "detector", entry(path, "", threshold, block, size))
    # one thread: the report's latency_ms_1_thread_640 is timed with this detector
    return Detector(spec, threads=1, options=DetectOptions(max_detections=50), rescorers=specs)


def rescorer_representative(det: Detector, pages, n: int = 300, seed: int = 0) -> list[np.ndarray]:
    """Rescorer inputs cut around candidates and true boxes of training pages (the int8 calibration set)."""
    from training.train_rescorer import CANDIDATE_THRESHOLD, CONTEXT, HEIGHT, WIDTH, to_canvas

    crops = []
    for gray, gt in pages:
        canvas, boxes, _, lb = det.candidates(gray, CANDIDATE_THRESHOLD)
        # the true boxes too: the calibration set must hold signatures whatever the detector finds
        crops += [rescorer_input(canvas, tuple(b), HEIGHT, WIDTH, CONTEXT) for b in [*boxes, *to_canvas(gt, lb)]]
    rng = np.random.default_rng(seed)
    return [crops[i] for i in rng.choice(len(crops), min(n, len(crops)), replace=False)]


def measure(det: Detector, negatives, train_pages, val_pages, nbytes: int, latency_ms: float) -> dict:
    """Threshold by the false-alarm rule, then F1 on training pages and P/R/mAP on validation pages."""
    neg_preds = predict(det, negatives)
    thr = empty_page_threshold(neg_preds)
    f1_train = evaluate_detections(predict(det, train_pages), truth(train_pages), score_threshold=thr).f1
    val = evaluate_detections(predict(det, val_pages), truth(val_pages), score_threshold=thr)
    return {"score_threshold": thr, "train_f1": f1_train, "validation": val.to_dict(),
            "signature_free_pages_without_box": empty_page_pass_rate(neg_preds, thr),
            "negative_pages": len(negatives), "latency_ms_1_thread_640": latency_ms, "bytes": nbytes}


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
    # no grid value meets the budget: ship the strictest one and say so, rather than fail the export
    log.warning("no threshold up to %.3f keeps %.0f%% of the signature-free pages empty; using %.3f",
                THRESHOLD_GRID[-1], 100 * target, THRESHOLD_GRID[-1])
    return float(THRESHOLD_GRID[-1])


def median_ms(run, repeat: int = 20) -> float:
    """Median wall time of ``run()`` in milliseconds, after one call to warm up."""
    run()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def model_latency_ms(det: Detector, page: np.ndarray) -> float:
    """The detector model alone on one letterboxed page (no decoding)."""
    canvas = letterbox(page, det.size)[0][..., None]
    return median_ms(lambda: det._model(canvas))


def convert_rescorer(run: Path, tmp: Path, representative: list[np.ndarray] | None,
                     member: int = 0) -> dict[str, Path]:
    """The rescorer run's float TFLite file and, given the int8 calibration crops
    (``rescorer_representative``), its int8 one from the QAT weights, as ensemble member ``member``."""
    from training.train_rescorer import build_rescorer, load_qat_rescorer

    float_model = build_rescorer()
    float_model.load_weights(run / "float.h5")
    names = rescorer_files(member)
    float_role, float_name = names["detector_float"]
    files = {float_role: tmp / float_name}
    files[float_role].write_bytes(convert(float_model, None))
    if representative is not None:
        int8_role, int8_name = names["detector"]
        files[int8_role] = tmp / int8_name
        files[int8_role].write_bytes(convert(load_qat_rescorer(run), representative))
    return files


def rescorer_command(run: Path) -> str:
    """The training command of a rescorer run, from the options its state.json recorded."""
    cfg = json.loads((run / "state.json").read_text()).get("config", {})
    return training_command("training.train_rescorer", run, cfg)


def export(run: Path, out: Path, data_root: Path | None = None, cache: Path | None = None,
           negative_pages: int = 200, int8: bool = True, rescorer_runs: list[Path] | tuple = ()) -> dict:
    from training import data as D
    from training import detector_data as DD
    from training.detector_model import build_detector, quantize_aware
    from training.docsynth import PageSynth, renderer_provenance
    from training.train_detector import signature_pool

    root = data_root or D.DEFAULT_DATA_ROOT
    cfg = json.loads((run / "state.json").read_text()).get("config", {})
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
        # one calibration set for every member: the float detector's candidates on the training pages
        representative = (rescorer_representative(detector_for(files["detector_float"]), train_pages)
                          if rescorer_runs and int8 else None)
        for member, rescorer_run in enumerate(rescorer_runs):
            files.update(convert_rescorer(rescorer_run, tmp, representative, member))
        # {detector role: its rescorer roles}, one per run, of the detector's precision
        res_roles = {role: [rescorer_files(k)[role][0] for k in range(len(rescorer_runs))]
                     for role in ("detector", "detector_float")}
        report, thresholds, fused = {}, {}, {}
        for role in ("detector_float", "detector"):
            if role not in files:
                continue
            path = files[role]
            det = detector_for(path)
            report[role] = measure(det, negatives, train_pages, val_pages, path.stat().st_size,
                                   model_latency_ms(det, val_pages[0][0]))
            thresholds[role] = report[role]["score_threshold"]
            log.info("%s: %s", role, report[role])
            if rescorer_runs:
                det = detector_for(path, rescorers=[files[r] for r in res_roles[role]])
                # bytes: all files, as all ship; time: a whole detect call (detector, decoding, rescoring)
                page = val_pages[0][0]
                fused[role] = measure(det, negatives, train_pages, val_pages,
                                      path.stat().st_size + sum(files[r].stat().st_size for r in res_roles[role]),
                                      median_ms(lambda: det.detect(page)))
                log.info("%s + %s: %s", role, res_roles[role], fused[role])
        out.mkdir(parents=True, exist_ok=True)
        manifest_path = out / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for role in [r for r in manifest["models"] if r.startswith("rescorer")]:  # the previous second stage
            old = out / manifest["models"].pop(role)["file"]
            if old.name not in {p.name for p in files.values()}:
                old.unlink(missing_ok=True)
        for role, path in files.items():
            shutil.copy2(path, out / path.name)
            if role.startswith("rescorer"):
                manifest["models"][role] = rescorer_entry(out / path.name,
                                                          "float32" if role.endswith("_float") else "int8")
                continue
            block = rescoring_block(res_roles[role], fused[role]["score_threshold"]) if role in fused else None
            manifest["models"][role] = entry(out / path.name, "int8" if role == "detector" else "float32",
                                             thresholds[role], block)
        if not int8:
            manifest["models"]["detector"] = dict(manifest["models"]["detector_float"])
        manifest["detection"] = {
            "training": {"command": training_command("training.train_detector", run, cfg),
                **provenance(run),
                "split_seed": DD.SPLIT_SEED,
                "architecture": f"MobileNetV2 alpha={alpha} + FPN-lite centre-heatmap head, stride 8, "
                                f"trained on 320x320 crops, exported at {SIZE}x{SIZE}x1",
                "data": "documents_tobacco800 training documents (page-disjoint split by document, "
                        "training/splits/tobacco800_*.txt) + synthetic pages (training/docsynth.py) with real "
                        "signatures of the embedder's training writers"},
            "threshold_rule": f"lowest score threshold (grid step {THRESHOLD_STEP}) at which at least "
                              f"{EMPTY_PAGE_TARGET:.0%} of {len(negatives)} generated signature-free pages "
                              f"(training/docsynth.py, seed {NEGATIVE_PAGE_SEED}) get no box",
            # the generated pages follow the host's fonts: what a re-export must match to reproduce them
            "generated_pages": renderer_provenance(),
            "report": report,
        }
        if fused:
            commands = [rescorer_command(r) for r in rescorer_runs]
            manifest["detection"]["rescorer"] = {
                "training": {
                    "command": commands[0] if len(commands) == 1 else " && ".join(commands),
                    # one entry per ensemble member, in the order of the rescoring roles
                    "weights_sha256": [weights_sha256(r) for r in rescorer_runs],
                    "converted_with": converter_versions(),
                    "data": "candidate boxes of the shipped int8 detector (score >= 0.05) on the training documents "
                            "of documents_tobacco800 and on generated pages, labelled by IoU with the true boxes, "
                            "plus jittered true boxes and random ink windows"},
                "fusion": "score = sqrt(detector probability x rescorer probability)"
                          + ("" if len(rescorer_runs) == 1 else
                             f"; rescorer probability = sigmoid(mean logit of {len(rescorer_runs)} rescorers)"),
                "report": fused,
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
    p.add_argument("--rescorer-run", type=Path, action="append", default=[],
                   help="training/train_rescorer.py run to ship with it (several: an ensemble, logits averaged)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rep = export(args.run, args.out, args.data, args.cache, args.negative_pages, int8=args.int8,
                 rescorer_runs=args.rescorer_run)
    print(json.dumps(rep["report"], indent=1))


if __name__ == "__main__":
    main()
