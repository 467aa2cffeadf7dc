"""The int8 detector converted at several input sizes: accuracy and time, side by side.

    TF_USE_LEGACY_KERAS=1 python benchmarks/detector_sizes.py --run training/checkpoints/detector-v2 \
        --sizes 448 512 576 640 --out benchmarks/results/detector-sizes.json

The detector is fully convolutional: the same QAT weights convert at any multiple of 32.
A page is letterboxed to the model's input, so a smaller input means a smaller page (the
model was trained with pages rescaled 0.7-1.4x) and proportionally fewer multiply-adds.
For every size the int8 file is converted as the export does it (100 training pages as the
representative set) and run with the bundle's int8 rescorers through the runtime
(``sigedge.detect.Detector``), on

* ``validation``: the page-disjoint validation pages of documents_tobacco800;
* ``generated``: ``--generated`` docsynth pages from seeds no training run used (the
  held-out set of ``benchmarks/rescorer_runs.py``).

mAP ranks every box down to a score of 0.01 (no threshold involved). Time: one thread,
the model alone (median of 20 calls on one page) and a whole ``detect`` call with the
rescorers (p50 over the validation pages, at the mAP's threshold of 0.01, so up to 24
candidates a page are rescored: slower than the shipped threshold), every size in the same
process, with its ratio to the largest size. The times are a guide only; run them on an
idle machine. Needs the training extras (TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from export.export_detector import convert, detector_for, median_ms, model_latency_ms, predict, truth  # noqa: E402
from benchmarks.detect_pages import per_page_ms  # noqa: E402
from benchmarks.heldout_pages import page_sets, write_report  # noqa: E402
from sigedge.bundle import ModelBundle  # noqa: E402
from sigedge.detect import letterbox, rescorer_roles  # noqa: E402
from sigedge.detection_metrics import evaluate_detections  # noqa: E402
from training import detector_data as DD  # noqa: E402
from training.detector_model import build_detector, quantize_aware  # noqa: E402
from training.train_rescorer import parse_args  # noqa: E402

def convert_at(run: Path, size: int, train_pages, out: Path) -> Path:
    """The run's QAT weights as a full-integer file of input ``size`` (the export's recipe)."""
    cfg = json.loads((run / "state.json").read_text()).get("config", {})
    model = quantize_aware(build_detector(size, float(cfg.get("alpha", 0.35))))
    model.load_weights(run / "qat.h5")
    rng = np.random.default_rng(0)
    picks = rng.choice(len(train_pages), min(100, len(train_pages)), replace=False)
    path = out / f"detector_{size}_int8.tflite"
    path.write_bytes(convert(model, [letterbox(train_pages[i][0], size)[0] for i in picks]))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("training/checkpoints/detector-v2"),
                    help="train_detector output folder (qat.h5, state.json)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[448, 512, 576, 640])
    ap.add_argument("--generated", type=int, default=300, help="generated held-out pages (0: none)")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle whose int8 rescorers are used")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if any(s % 32 for s in args.sizes):
        ap.error("every size must be a multiple of 32 (the backbone's stride)")
    targs = parse_args(["--out", str(args.run)])  # the training defaults: data, cache, page style, pool size
    train_pages = DD.load_pages(targs.data, DD.split_documents(targs.data)[0])
    sets = page_sets(targs, args.generated)
    bundle = ModelBundle.load(args.bundle)
    rescorers = [bundle.model(r).file for r in rescorer_roles(bundle.model("detector").raw)]
    report = {"run": str(args.run), "rescorers": [p.name for p in rescorers],
              "pages": {s: len(p) for s, p in sets.items()}, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="sigedge-sizes-") as tmp:
        for size in sorted(args.sizes, reverse=True):
            path = convert_at(args.run, size, train_pages, Path(tmp))
            alone, rescored = detector_for(path, size=size), detector_for(path, rescorers=rescorers, size=size)
            row = {"bytes": path.stat().st_size}
            for name, pages in sets.items():
                for label, det in (("alone", alone), ("rescored", rescored)):
                    r = evaluate_detections(predict(det, pages), truth(pages))
                    row[f"{name}_{label}"] = {"map50": r.map50, "map50_95": r.map50_95}
            page = sets["validation"][0][0]
            row["model_ms"] = model_latency_ms(alone, page)
            row["detect_rescored_ms_p50"] = float(np.median(per_page_ms(rescored.detect,
                                                                         [g for g, _ in sets["validation"]], 1)))
            row["detect_alone_ms_p50"] = median_ms(lambda: alone.detect(page))
            report["sizes"][str(size)] = row
            print(f"{size}: {json.dumps(row)}", file=sys.stderr, flush=True)
    top = report["sizes"][str(max(args.sizes))]
    for row in report["sizes"].values():
        row["model_time_ratio"] = row["model_ms"] / top["model_ms"]
        row["detect_rescored_time_ratio"] = row["detect_rescored_ms_p50"] / top["detect_rescored_ms_p50"]
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
