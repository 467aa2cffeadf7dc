"""The ``sigedge`` command line. Exit codes: see :data:`sigedge.errors.EXIT_CODES`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .cli_common import command_errors, emit, make_pipeline, print_table, progress
from .errors import EXIT_CODES, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Offline handwritten signature verification on the edge.\n\nExit codes: "
    + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # OpenCV prints its own decoder warnings on stderr (e.g. for a truncated PNG); sigedge
        # reports the failure itself, in one line, so keep OpenCV quiet unless asked.
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


BundleOpt = typer.Option(None, "--bundle", help="Model bundle directory (default: the bundled models).")
ThreadsOpt = typer.Option(1, "--threads", min=1, help="Interpreter threads.")
PrecisionOpt = typer.Option("int8", "--precision", help="int8 (shipped) or float (reference) embedder.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")
ScorerOpt = typer.Option("bundle", "--scorer", help="bundle (its learned scorer over the cosine and ink statistics, "
                         "where it has one) or cosine (the fused cosine alone, on its own thresholds).")
RotationsOpt = typer.Option(None, "--query-rotations",
                           help="Angles in degrees, comma-separated, with 0 (e.g. -10,0,10), at which the query is "
                                "also scored, its best counting (default: the bundle's, which its thresholds are "
                                "calibrated for); 0 turns the search off, at under half the time a query.")
CleanerOpt = typer.Option(None, "--cleaner", help="classic (straight lines spanning the crop), learned (also the "
                          "bundle's learned cleaner: printed text, stamps, lines) or auto (learned where the bundle "
                          "has a cleaner). Default: classic, the cleaning the thresholds were "
                          "calibrated with; with --gallery, the way its references were cleaned.")


_pipeline = make_pipeline


@app.command()
def verify(
    query: Path = typer.Argument(..., help="The signature to check (a cropped signature image)."),
    references: Optional[List[Path]] = typer.Argument(None, help="Enrolled genuine signatures of the claimed writer."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Take the references from this gallery..."),
    writer: Optional[str] = typer.Option(None, "--writer", help="...enrolled under this writer id."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Decision threshold (default: calibrated), on the verification score's scale "
                                  "(the learned scorer's probability where the bundle has one, else the fused "
                                  "cosine; identify's thresholds are on the plain cosine)."),
    operating_point: Optional[str] = typer.Option(None, "--operating-point",
                                                  help="A calibrated threshold by name, e.g. far_skilled_1pct."),
    bundle: Optional[Path] = BundleOpt,
    threads: int = ThreadsOpt,
    precision: str = PrecisionOpt,
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="Key of an encrypted gallery."),
    explain: Optional[Path] = typer.Option(None, "--explain", help="Write a picture explaining the decision (PNG)."),
    page: bool = typer.Option(False, "--page", help="QUERY is a whole page: detect its signatures, verify each."),
    scorer: str = ScorerOpt,
    query_rotations: Optional[str] = RotationsOpt,
    cleaner: Optional[str] = CleanerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Verify QUERY against REFERENCES (1:1). Exit 0 if accepted as genuine, 1 if rejected.

    With --page, exit 0 if any signature on the page is accepted, 4 if none is found.
    """
    with command_errors():
        if page:
            if gallery is not None or writer is not None or explain is not None:
                raise UsageError("--page takes reference images (not --gallery/--writer or --explain)")
            if not references:
                raise UsageError("give at least one reference image")
            pipe = _pipeline(bundle, threads, precision, threshold, operating_point, scorer=scorer,
                             query_rotations=query_rotations, cleaner=cleaner)
            accepted = _verify_page(pipe, query, references, as_json)
            raise typer.Exit(0 if accepted else 1)
        if gallery is not None or writer is not None:
            if gallery is None or writer is None:
                raise UsageError("--gallery and --writer go together")
            if references:
                raise UsageError("give either reference images or --gallery/--writer, not both")
            if explain is not None:
                raise UsageError("--explain needs reference images (a gallery keeps vectors, not pictures)")
            from .gallery_cli import verify_in_gallery

            result = verify_in_gallery(gallery, writer, query, bundle=bundle, threads=threads, threshold=threshold,
                                       precision=precision,
                                       operating_point=operating_point, key_file=key_file, scorer=scorer,
                                       query_rotations=query_rotations, cleaner=cleaner)
            ref_names = [f"{writer}#{i}" for i in range(len(result.similarities))]
        else:
            if not references:
                raise UsageError("give at least one reference image (or --gallery and --writer)")
            pipe = _pipeline(bundle, threads, precision, threshold, operating_point, scorer=scorer,
                             query_rotations=query_rotations, cleaner=cleaner)
            result = pipe.verify(query, references)
            ref_names = [str(r) for r in references]
            if explain is not None:
                _write_explanation(pipe, query, references[result.closest_reference], result, explain)
        data = {"query": str(query), "references": ref_names, **_asdict(result),
                "decision": "genuine" if result.genuine else "rejected"}

        def human() -> None:
            verdict = "GENUINE" if result.genuine else "REJECTED"
            typer.echo(f"{verdict}  score {result.score:.4f}  threshold {result.threshold:.4f} ({result.operating_point})"
                       f"  band: {result.band}")
            if result.scorer == "learned":
                measured = ["ink statistics"] + (["contour hinge"] if pipe.scorer.hinge is not None else []) + (
                    ["strip embeddings"] if pipe.scorer.strips is not None else [])
                extras = ", ".join(measured[:-1]) + " and " + measured[-1] if len(measured) > 1 else measured[0]
                typer.echo(f"score: the learned scorer's genuine probability (cosine {result.cosine:.4f}, with "
                           f"{extras})")
            if result.reference_agreement is not None and result.writer_normalised:
                typer.echo(f"score: the similarities' fusion, normalised for how closely the references agree "
                           f"with each other ({result.reference_agreement:.4f})")
            if result.query_rotation:
                typer.echo(f"scored with the query turned by {result.query_rotation:+g} degrees (its best angle)")
            print_table(["reference", "similarity"], zip(ref_names, result.similarities))

        emit(data, as_json, human)
    raise typer.Exit(0 if result.genuine else 1)


def _verify_page(pipe, page: Path, references: List[Path], as_json: bool) -> bool:
    found = pipe.verify_page(page, references)
    rows = [{"signature": i + 1, "box": [round(v, 1) for v in s.detection.box], "detection_score": s.detection.score,
             **({"score": s.result.score, "threshold": s.result.threshold,
                 "decision": "genuine" if s.result.genuine else "rejected"} if s.result else
                {"score": None, "threshold": pipe.threshold, "decision": "no ink"})}
            for i, s in enumerate(found)]
    accepted = any(s.result is not None and s.result.genuine for s in found)
    data = {"page": str(page), "references": [str(r) for r in references], "signatures": rows,
            "decision": "genuine" if accepted else "rejected", "operating_point": pipe.operating_point}

    def human() -> None:
        typer.echo(f"{'GENUINE' if accepted else 'REJECTED'}  {len(found)} signature(s) on {page}, "
                   f"threshold {pipe.threshold:.4f} ({pipe.operating_point})")
        print_table(["#", "box", "detection", "score", "decision"],
                    [(r["signature"], " ".join(str(round(v)) for v in r["box"]), r["detection_score"],
                      "-" if r["score"] is None else r["score"], r["decision"]) for r in rows])

    emit(data, as_json, human)
    return accepted


def _write_explanation(pipe, query: Path, reference: Path, result, out: Path) -> None:
    import cv2

    from .explain import explain_image

    # the query as it was scored: turned by the angle that scored best
    picture = explain_image(pipe.query_canvas(query, result.query_rotation), pipe.prepare(reference).canvas, result,
                            pipe.calibrated_thresholds(result.scorer))
    if not cv2.imwrite(str(out), picture):
        raise UsageError(f"cannot write {out} (unknown extension or unwritable folder)")


def _asdict(obj) -> dict:
    from dataclasses import asdict

    return asdict(obj)


@app.command()
def embed(
    images: List[Path] = typer.Argument(..., help="Cropped signature images."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the (N, D) float32 embeddings to this .npy file."),
    bundle: Optional[Path] = BundleOpt,
    threads: int = ThreadsOpt,
    precision: str = PrecisionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print (or save) the L2-normalised embedding of each image."""
    with command_errors():
        import numpy as np

        pipe = _pipeline(bundle, threads, precision)
        vectors = np.stack([pipe.embed(p) for p in progress(images, "embedding", not as_json)])
        if out is not None:
            np.save(out, vectors)
        rows = [{"image": str(p), "embedding": v} for p, v in zip(images, vectors)]

        def human() -> None:
            print_table(["image", "dim", "first values"],
                        [(str(p), len(v), " ".join(f"{x:+.3f}" for x in v[:4]) + " ...") for p, v in zip(images, vectors)])
            if out is not None:
                typer.echo(f"wrote {out} ({vectors.shape[0]}x{vectors.shape[1]} float32)")

        emit({"model_sha256": pipe.model_sha256, "dim": pipe.dim, "items": rows}, as_json, human)


@app.command()
def clean(
    image: Path = typer.Argument(..., help="A signature crop or small document region."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the cleaned image (PNG recommended)."),
    canvas: bool = typer.Option(False, "--canvas", help="Write the normalised model canvas instead (dark ink on white)."),
    bundle: Optional[Path] = BundleOpt,
    cleaner: Optional[str] = CleanerOpt,
) -> None:
    """Clean a signature image: flatten the background, remove ruled lines, box borders and specks, and
    with the bundle's learned cleaner printed text and stamps."""
    with command_errors():
        from dataclasses import replace

        import cv2
        import numpy as np

        from .clean import clean_signature
        from .imageio import load_image

        pipe = _pipeline(bundle, cleaner=cleaner)
        if canvas:
            prepared = pipe.prepare(image)
            result = (255 - np.round(prepared.canvas * 255)).astype(np.uint8)
        else:
            options = replace(pipe.options.clean_options, remove_specks=True)
            result = clean_signature(load_image(image), options, pipe.cleaner)
        if not cv2.imwrite(str(out), result):
            raise UsageError(f"cannot write {out} (unknown extension or unwritable folder)")
        typer.echo(f"wrote {out} ({result.shape[1]}x{result.shape[0]})")


@app.command()
def evaluate(
    labels: Path = typer.Argument(..., help="CSV with path,writer,kind (kind genuine|forgery), paths relative to it."),
    refs: int = typer.Option(5, "--refs", min=1, help="Genuine references drawn per writer."),
    seed: int = typer.Option(0, "--seed", help="Seed of the reference draw (and of --bootstrap's resampling)."),
    draws: int = typer.Option(1, "--draws", min=1,
                              help="Also report the mean EER over this many reference draws (seeds SEED, SEED+1, ...): "
                                   "with few writers one draw moves the EER by points."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0,
                                  help="Also report a 95 % interval of each EER from this many resamples of the "
                                       "writers (with replacement; draw SEED's scores; e.g. 1000)."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="mean | max | top2 (default: the bundle's)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write ROC/DET curves and score histograms (PNG)."),
    bundle: Optional[Path] = BundleOpt,
    threads: int = ThreadsOpt,
    precision: str = PrecisionOpt,
    scorer: str = ScorerOpt,
    query_rotations: Optional[str] = RotationsOpt,
    cleaner: Optional[str] = CleanerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Writer-independent verification protocol: EER (skilled, random), FRR at FAR 1 % and 10 %, AUC."""
    with command_errors():
        from .evaluate_cli import run_evaluation

        run_evaluation(labels, refs=refs, seed=seed, fusion=fusion, plot=plot, as_json=as_json,
                       pipeline=_pipeline(bundle, threads, precision, scorer=scorer,
                                          query_rotations=query_rotations, cleaner=cleaner), draws=draws,
                       bootstrap=bootstrap)


@app.command()
def bench(
    images: Optional[List[Path]] = typer.Argument(None, help="Crops to time (default: generated signatures)."),
    repeat: int = typer.Option(50, "--repeat", min=1, help="Timed runs of each crop stage (half as many, in whole "
                               "passes over the pages, of each detect stage)."),
    pages: Optional[Path] = typer.Option(None, "--pages", help="Time detection on the page images of this folder "
                                         "(or YOLO folder) instead of generated pages."),
    split: Optional[Path] = typer.Option(None, "--split", help="With --pages: only the file names listed here."),
    bundle: Optional[Path] = BundleOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Per-stage latency, one thread, int8 next to float: decode, normalise, embed and score a
    crop; detect on a whole page, with and without the rescorers."""
    with command_errors():
        from .bench import run_bench
        from .detection_metrics import page_images

        if split is not None and pages is None:
            raise UsageError("--split needs --pages")
        page_files = page_images(pages, split) if pages is not None else []
        report = run_bench(bundle, images or [], repeat, page_files)

        def human() -> None:
            from .bench import print_bench

            print_bench(report)

        emit(report, as_json, human)


@app.command()
def export(
    run: Path = typer.Option(Path("runs/embedder"), "--run", help="Training run directory (float.h5, qat.h5, state.json)."),
    out: Path = typer.Option(Path("build/bundle"), "--out", help="Bundle directory to write."),
    int8: bool = typer.Option(False, "--int8", help="Full-integer int8 model from the QAT weights."),
    data: Optional[Path] = typer.Option(None, "--data", help="Signature data root (default ../shared/data)."),
    model: str = typer.Option("embedder", "--model", help="Which run this is: embedder, detector or cleaner. A "
                              "detector or cleaner is added to an existing bundle (--out must hold a manifest)."),
    rescorer_run: Optional[List[Path]] = typer.Option(None, "--rescorer-run", help="With --model detector: a "
                                                      "training/train_rescorer.py run shipped as its second stage "
                                                      "(repeat it to ship an ensemble whose logits are averaged)."),
) -> None:
    """Convert a trained run to TFLite (int8 with --int8), check parity, write a bundle. Needs the train extra."""
    with command_errors():
        try:
            import tensorflow  # noqa: F401
            import tensorflow_model_optimization  # noqa: F401
            import tf_keras  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"export needs the train extra ({exc.name} is missing): pip install 'sigedge[train]'") from None
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        if model not in ("embedder", "detector", "cleaner"):
            raise UsageError(f"--model must be embedder, detector or cleaner, not {model!r}")
        if model == "cleaner":
            if not (out / "manifest.json").is_file():
                raise UsageError(f"{out}: no manifest.json; export the embedder into it first")
            if not int8:
                raise UsageError("a cleaner is exported as int8 with its float reference: add --int8")
            from export.export_cleaner import export as export_cleaner

            cleaning = export_cleaner(run, out, data_root=data)
            for role, r in cleaning["report"].items():
                v = r["validation_pairs"]
                typer.echo(f"{role}: {r['bytes']} bytes, threshold {r['threshold']:.2f}, validation pairs: signature "
                           f"ink F1 {v['f1']:.3f} (P {v['precision']:.3f}, R {v['recall']:.3f}), clutter ink kept "
                           f"{v['clutter_kept']:.1%}")
            return
        if model == "detector":
            if not (out / "manifest.json").is_file():
                raise UsageError(f"{out}: no manifest.json; export the embedder into it first")
            from export.export_detector import export as export_detector

            for r in rescorer_run or []:
                if not (r / "state.json").is_file():
                    raise UsageError(f"{r}: not a rescorer run (no state.json)")
            detection = export_detector(run, out, data_root=data, int8=int8, rescorer_runs=list(rescorer_run or []))
            rows = [(role, r) for role, r in detection["report"].items()]
            rows += [(f"{role} + rescorer", r) for role, r in detection.get("rescorer", {}).get("report", {}).items()]
            for name, r in rows:
                v = r["validation"]
                typer.echo(f"{name}: {r['bytes']} bytes, threshold {r['score_threshold']:.3f}, validation "
                           f"mAP@0.5 {v['map50']:.3f}, mAP@0.5:0.95 {v['map50_95']:.3f}, P {v['precision']:.3f} "
                           f"R {v['recall']:.3f}; signature-free pages without a box "
                           f"{r['signature_free_pages_without_box']:.1%}")
            return
        from export.export_embedder import export as do_export

        manifest = do_export(run, out, int8=int8, data_root=data)
        for role, m in manifest["models"].items():
            typer.echo(f"{role}: {out / m['file']} ({m['bytes']} bytes, sha256 {m['sha256'][:16]}...)")
        for ds, p in manifest["parity"].items():
            typer.echo(f"{ds}: {p}")


@app.command()
def info(bundle: Optional[Path] = BundleOpt, as_json: bool = JsonOpt) -> None:
    """Versions, the interpreter backend in use, and the bundle's models with their hashes."""
    with command_errors():
        import cv2
        import hnswlib  # noqa: F401
        import numpy as np

        from .bundle import ModelBundle
        from .interpreter import interpreter_backend

        b = ModelBundle.load(bundle)
        backend = interpreter_backend()
        data = {
            "sigedge": __version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "hnswlib": _dist_version("hnswlib"),
            "interpreter_backend": backend,
            "interpreter_version": _dist_version(backend.split(".")[0].replace("_", "-")),
            "bundle": {"dir": str(b.directory), "name": b.name, "version": b.version,
                       "license": b.manifest.get("license"),
                       "models": {r: {"file": s.file.name, "sha256": s.sha256, "precision": s.precision,
                                      "bytes": s.file.stat().st_size, "input": [s.input_height, s.input_width, s.input_channels],
                                      "dim": s.output_dim} for r, s in b.models.items()},
                       "scorer": "learned" if b.verification.get("scorer") else "cosine",
                       "thresholds": b.verification.get("thresholds", {}),
                       "default_threshold": b.verification.get("default_threshold"),
                       **({"cosine_thresholds": b.verification["cosine"]["thresholds"]}
                          if b.verification.get("scorer") else {})},
        }

        def human() -> None:
            for k in ("sigedge", "numpy", "opencv", "hnswlib", "interpreter_backend", "interpreter_version"):
                typer.echo(f"{k:20s} {data[k]}")
            typer.echo(f"{'bundle':20s} {b.directory} ({b.name} {b.version})")
            typer.echo(f"{'verification score':20s} {data['bundle']['scorer']} "
                       f"({data['bundle']['default_threshold']} threshold on that scale)")
            print_table(["role", "file", "precision", "bytes", "sha256"],
                        [(r, m["file"], m["precision"], m["bytes"], m["sha256"]) for r, m in data["bundle"]["models"].items()])

        emit(data, as_json, human)


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _register_gallery_commands() -> None:
    from .detect_cli import register as register_detection
    from .gallery_cli import register

    register(app)
    register_detection(app)


_register_gallery_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
