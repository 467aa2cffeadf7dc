"""``sigedge detect`` and ``sigedge evaluate-detector``: signatures on whole pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .cli_common import command_errors, emit, make_pipeline, print_table, progress
from .errors import UsageError

__all__ = ["register"]


def _pipeline(bundle: Optional[Path], threads: int, precision: str):
    return make_pipeline(bundle, threads, precision)


def _write_crops(crops_dir: Path, stem: str, found) -> list[str]:
    import cv2

    crops_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sig in enumerate(found):
        path = crops_dir / f"{stem}_sig{i + 1}.png"
        if not cv2.imwrite(str(path), sig.crop):
            raise UsageError(f"cannot write {path}")
        paths.append(str(path))
    return paths


def register(app: typer.Typer) -> None:
    """Add the detection commands to ``app``."""
    bundle_opt = typer.Option(None, "--bundle", help="Model bundle directory (default: the bundled models).")
    threads_opt = typer.Option(1, "--threads", min=1, help="Interpreter threads.")
    precision_opt = typer.Option("int8", "--precision", help="int8 (shipped) or float (reference) detector.")
    json_opt = typer.Option(False, "--json", help="Machine-readable JSON output.")

    @app.command("detect")
    def detect(
        page: Path = typer.Argument(..., help="A scanned page (any size; colour or gray)."),
        crops: Optional[Path] = typer.Option(None, "--crops", help="Write each signature's crop into this folder."),
        annotate: Optional[Path] = typer.Option(None, "--annotate", help="Write the page with the boxes drawn."),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Score threshold (default: the bundle's)."),
        bundle: Optional[Path] = bundle_opt,
        threads: int = threads_opt,
        precision: str = precision_opt,
        as_json: bool = json_opt,
    ) -> None:
        """Find every signature on PAGE: boxes (x0 y0 x1 y1, page pixels) and scores. Exit 0 even if none."""
        with command_errors():
            from .detect import annotate as draw
            from .imageio import load_image

            pipe = _pipeline(bundle, threads, precision)
            img = load_image(page)
            found = pipe.signatures_on_page(img, threshold)
            crop_paths = _write_crops(crops, page.stem, found) if crops is not None else []
            if annotate is not None:
                try:
                    draw(img, [s.detection for s in found], annotate)
                except OSError as exc:
                    raise UsageError(str(exc)) from None
            data = {"page": str(page), "width": int(img.shape[1]), "height": int(img.shape[0]),
                    "threshold": pipe.detector.score_threshold if threshold is None else threshold,
                    "signatures": [{"box": [round(v, 1) for v in s.detection.box], "score": s.detection.score,
                                    **({"crop": crop_paths[i]} if crop_paths else {})} for i, s in enumerate(found)]}

            def human() -> None:
                typer.echo(f"{len(found)} signature(s) on {page} ({img.shape[1]}x{img.shape[0]})")
                if found:
                    print_table(["#", "x0", "y0", "x1", "y1", "score"],
                                [(i + 1, *(round(v) for v in s.detection.box), s.detection.score)
                                 for i, s in enumerate(found)])

            emit(data, as_json, human)

    @app.command("evaluate-detector")
    def evaluate_detector(
        directory: Path = typer.Argument(..., help="YOLO folder: images/ and labels/ (class x y w h, normalised)."),
        split: Optional[Path] = typer.Option(None, "--split", help="Only the image file names listed in this file."),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Score threshold for P/R (default: bundle)."),
        failures: Optional[Path] = typer.Option(None, "--failures", help="Write annotated failure cases here."),
        bootstrap: int = typer.Option(0, "--bootstrap", min=0,
                                      help="Also report 95 % intervals from this many resamples of the pages "
                                           "(with replacement; e.g. 1000)."),
        seed: int = typer.Option(0, "--seed", help="Seed of --bootstrap's resampling of the pages."),
        bundle: Optional[Path] = bundle_opt,
        threads: int = threads_opt,
        precision: str = precision_opt,
        as_json: bool = json_opt,
    ) -> None:
        """Precision, recall, mAP@0.5 and mAP@0.5:0.95 of the detector on a labelled folder."""
        with command_errors():
            from .detection_metrics import (bootstrap_over_pages, evaluate_detections, failure_cases, read_split,
                                            read_yolo_labels, yolo_pairs)
            from .detect import ranked_boxes
            from .imageio import load_image

            pairs = yolo_pairs(directory)
            if split is not None:
                wanted = read_split(split)
                pairs = [p for p in pairs if p[0].name in wanted]
            if not pairs:
                raise UsageError(f"{directory}: no images to evaluate")
            pipe = _pipeline(bundle, threads, precision)
            thr = pipe.detector.score_threshold if threshold is None else threshold
            preds, truth, images = {}, {}, {}
            for img_path, label_path in progress(pairs, "detecting", enabled=not as_json):
                img = load_image(img_path)
                h, w = img.shape[:2]
                truth[img_path.name] = (read_yolo_labels(label_path, w, h) if label_path is not None
                                        else np.zeros((0, 4)))
                preds[img_path.name] = ranked_boxes(pipe.detector, img, thr)  # mAP ranks them all
                images[img_path.name] = img_path
            report = evaluate_detections(preds, truth, score_threshold=thr)
            data = {"directory": str(directory), "precision_mode": precision, **report.to_dict()}
            if failures is not None:
                data["failures"] = _write_failures(failures, failure_cases(preds, truth, thr), images)
            if bootstrap > 0:
                data["bootstrap"] = bootstrap_over_pages(preds, truth, thr, resamples=bootstrap, seed=seed)

            def human() -> None:
                print_table(["images", "boxes", "predicted", "threshold", "precision", "recall", "F1",
                             "mAP@0.5", "mAP@0.5:0.95"],
                            [(report.images, report.ground_truth, report.predictions, report.score_threshold,
                              report.precision, report.recall, report.f1, report.map50, report.map50_95)])
                if failures is not None:
                    typer.echo(f"{len(data['failures'])} failure case(s) written to {failures}")
                if bootstrap > 0:
                    b = data["bootstrap"]
                    spans = ", ".join(f"{label} {b[name + '_interval'][0]:.3f} to {b[name + '_interval'][1]:.3f}"
                                      for name, label in (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95"),
                                                          ("precision", "precision"), ("recall", "recall")))
                    typer.echo(f"{100 * b['level']:.0f} % intervals over {bootstrap} resamples of the pages: {spans}")

            emit(data, as_json, human)


def _write_failures(folder: Path, cases: dict, images: dict) -> list[str]:
    """Each failing page with missed boxes in blue and false positives in red."""
    import cv2

    from .imageio import load_image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, case in cases.items():
        img = load_image(images[name])
        img = img.copy() if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        for colour, key in (((255, 0, 0), "missed"), ((0, 0, 255), "false_positives")):
            for x0, y0, x1, y1 in case[key]:
                cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, 2)
        out = folder / f"{Path(name).stem}_failure.png"
        if not cv2.imwrite(str(out), img):
            raise UsageError(f"cannot write {out}")
        (folder / f"{Path(name).stem}_failure.json").write_text(json.dumps(case))
        written.append(str(out))
    return written
