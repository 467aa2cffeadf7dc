"""Gallery commands of the ``sigedge`` command line.

``sigedge.cli`` calls :func:`register` to add them to its app::

    sigedge enroll GALLERY WRITER IMG... [--keep-crops] [--cleaner M] [--json]
    sigedge identify GALLERY IMG [--k 5] [--all] [--cleaner M] [--json]
    sigedge remove GALLERY WRITER [--json]
    sigedge audit check GALLERY [--json]
    sigedge reindex GALLERY [--force] [--cleaner M] [--json]
    sigedge gallery-info GALLERY [--writers] [--json]

An encrypted gallery's key comes from ``--key-file PATH`` or ``SIGEDGE_GALLERY_KEY``
(hex or base64 of 32 bytes); enrolling into a new gallery with a key creates it encrypted.
Errors are one line on stderr with the exit codes of :data:`sigedge.errors.EXIT_CODES`
(6 for gallery errors, including a failed audit check). Queries and new references are
cleaned the way the gallery recorded its references were cleaned, unless ``--cleaner`` says
otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import command_errors, emit, fail, make_pipeline, print_table
from .pipeline import VerifyResult

__all__ = ["register", "verify_in_gallery"]

_JSON = typer.Option(False, "--json", help="Machine-readable JSON output.")
_KEY_FILE = typer.Option(None, "--key-file",
                         help="File with the gallery key (32 raw bytes, or hex/base64). Default: $SIGEDGE_GALLERY_KEY.")
_BUNDLE = typer.Option(None, "--bundle", help="Model bundle directory (default: the bundled models).")
_THREADS = typer.Option(1, "--threads", min=1, help="Interpreter threads.")
_PRECISION = typer.Option("int8", "--precision", help="int8 (shipped) or float (reference) embedder.")
_CLEANER = typer.Option(None, "--cleaner", help="classic, learned (the bundle's learned cleaner too: printed text, "
                        "stamps) or auto. Default: the way the gallery's references were cleaned (a new gallery: "
                        "classic); enrolling another way into a gallery that has references is refused.")


_pipeline = make_pipeline


def _key(key_file: Optional[Path]) -> Optional[bytes]:
    if key_file is None:
        return None  # the gallery then reads SIGEDGE_GALLERY_KEY
    from .crypto import read_key_file

    return read_key_file(key_file)


def _name(p: Path | str) -> str:
    return os.fsencode(p).decode("utf-8", "backslashreplace")


def verify_in_gallery(gallery_path: str | os.PathLike, writer: str, query, key: bytes | str | None = None, *,
                      bundle: Optional[Path] = None, threads: int = 1, threshold: Optional[float] = None,
                      operating_point: Optional[str] = None, precision: str = "int8",
                      key_file: Optional[Path] = None, scorer: str = "bundle",
                      query_rotations: Optional[str] = None, cleaner: Optional[str] = None) -> VerifyResult:
    """1:1 verification of ``query`` against ``writer``'s references in a gallery.

    What ``sigedge verify --gallery G --writer W QUERY`` runs. The key is ``key``, else
    the one in ``key_file``, else ``SIGEDGE_GALLERY_KEY``. The query is cleaned as the
    gallery's references were, unless ``cleaner`` says otherwise.
    """
    from .gallery import verify_in_gallery as _verify

    if key is None and key_file is not None:
        key = _key(key_file)
    pipe = _pipeline(bundle, threads, precision, threshold, operating_point, scorer=scorer,
                     query_rotations=query_rotations, cleaner=cleaner, gallery=Path(os.fsdecode(gallery_path)))
    return _verify(gallery_path, writer, query, key=key, pipeline=pipe)


def register(app: typer.Typer) -> None:
    """Add the gallery commands to ``app``."""

    @app.command("enroll")
    def enroll(
        gallery: Path = typer.Argument(..., help="Gallery directory (created if missing)."),
        writer: str = typer.Argument(..., help="Writer id to enrol the signatures under."),
        images: List[Path] = typer.Argument(..., help="Cropped signature images of the writer."),
        keep_crops: bool = typer.Option(False, "--keep-crops",
                                        help="Keep the images in the gallery (needed by `sigedge reindex`)."),
        key_file: Optional[Path] = _KEY_FILE,
        bundle: Optional[Path] = _BUNDLE,
        threads: int = _THREADS,
        precision: str = _PRECISION,
        cleaner: Optional[str] = _CLEANER,
        as_json: bool = _JSON,
    ) -> None:
        """Enrol reference signatures of WRITER (all or nothing: one bad image changes nothing)."""
        with command_errors():
            from .gallery import Gallery

            from .gallery import _check_writer_id, describe_images

            key = _key(key_file)
            _check_writer_id(writer)
            pipe = _pipeline(bundle, threads, precision, cleaner=cleaner, gallery=gallery)
            # Embed first, so that a bad image leaves no trace (not even a new empty gallery).
            vectors, inks, crops = describe_images(pipe, list(images), keep_crops)
            with Gallery(gallery, pipe, key=key, keep_crops=keep_crops) as g:
                result = g._enroll_embeddings(writer, vectors, crops, inks)

            def human() -> None:
                typer.echo(f"enrolled {result.added} signature(s) of {result.writer_id!r} "
                           f"({result.samples} now{', new writer' if result.new_writer else ''})")

            emit({"gallery": _name(gallery), **_dict(result)}, as_json, human)

    @app.command("identify")
    def identify(
        gallery: Path = typer.Argument(..., help="Gallery directory."),
        image: Path = typer.Argument(..., help="The signature to identify."),
        k: int = typer.Option(5, "--k", "-k", min=1, help="How many candidate writers to list."),
        show_all: bool = typer.Option(False, "--all", help="List the best K even below the threshold."),
        page: bool = typer.Option(False, "--page", help="IMAGE is a whole page: identify each signature on it."),
        key_file: Optional[Path] = _KEY_FILE,
        bundle: Optional[Path] = _BUNDLE,
        threads: int = _THREADS,
        precision: str = _PRECISION,
        cleaner: Optional[str] = _CLEANER,
        as_json: bool = _JSON,
    ) -> None:
        """Which enrolled writer signed IMAGE? Lists accepted writers, best first (none: unknown signer)."""
        with command_errors():
            from .gallery import Gallery

            key = _key(key_file)
            pipe = _pipeline(bundle, threads, precision, cleaner=cleaner, gallery=gallery)
            if page:
                _identify_page(Gallery, gallery, image, pipe, key, k, show_all, as_json)
                return
            with Gallery(gallery, pipe, key=key, create=False) as g:
                matches = g.identify(image, k=k, include_rejected=True)
                threshold = g.identify_threshold
            accepted = [m for m in matches if m.accepted]
            shown = matches if show_all else accepted
            data = {"query": _name(image), "decision": "match" if accepted else "unknown",
                    "writer": accepted[0].writer_id if accepted else None, "threshold": threshold,
                    "matches": [_dict(m) for m in shown]}

            def human() -> None:
                if accepted:
                    typer.echo(f"MATCH  {accepted[0].writer_id}  score {accepted[0].score:.4f}  "
                               f"threshold {threshold:.4f}")
                else:
                    typer.echo(f"UNKNOWN signer: no enrolled writer scores {threshold:.4f} or more")
                if shown:
                    print_table(["rank", "writer", "score", "accepted", "references"],
                                [(m.rank, m.writer_id, m.score, "yes" if m.accepted else "no", m.references)
                                 for m in shown])

            emit(data, as_json, human)

    @app.command("remove")
    def remove(
        gallery: Path = typer.Argument(..., help="Gallery directory."),
        writer: str = typer.Argument(..., help="Writer id to erase."),
        key_file: Optional[Path] = _KEY_FILE,
        bundle: Optional[Path] = _BUNDLE,
        precision: str = _PRECISION,
        as_json: bool = _JSON,
    ) -> None:
        """Erase WRITER: their vectors, images and id leave every file of the gallery."""
        with command_errors():
            from .gallery import Gallery

            key = _key(key_file)
            # erasing needs no cleaning: the bundle's default, so that a bundle without the gallery's
            # learned cleaner can still erase a writer
            with Gallery(gallery, _pipeline(bundle, 1, precision), key=key, create=False) as g:
                n = g.remove(writer)
            emit({"gallery": _name(gallery), "writer": writer, "samples_erased": n}, as_json,
                 lambda: typer.echo(f"erased {writer!r}: {n} signature(s)"))

    audit_app = typer.Typer(help="The gallery's hash-chained audit log.", no_args_is_help=True)

    @audit_app.command("check")
    def audit_check(
        gallery: Path = typer.Argument(..., help="Gallery directory."),
        as_json: bool = _JSON,
    ) -> None:
        """Verify the audit log: exit 0 if intact, 6 naming the first edited, inserted or deleted line."""
        with command_errors():
            from .gallery import check_audit

            report = check_audit(gallery)
        if as_json:
            emit(report, True, lambda: None)
            raise typer.Exit(0 if report.ok else 6)
        if not report.ok:
            fail(report.reason or "audit log check failed", 6)
        typer.echo(f"audit log OK: {report.lines} event(s), chain head matches the gallery database")

    app.add_typer(audit_app, name="audit")

    @app.command("reindex")
    def reindex(
        gallery: Path = typer.Argument(..., help="Gallery directory."),
        force: bool = typer.Option(False, "--force", help="Re-embed even if the gallery already uses this model."),
        key_file: Optional[Path] = _KEY_FILE,
        bundle: Optional[Path] = _BUNDLE,
        threads: int = _THREADS,
        precision: str = _PRECISION,
        cleaner: Optional[str] = typer.Option(None, "--cleaner", help="Re-clean the kept images this way: classic, "
                                              "learned or auto (default: the way they were cleaned)."),
        as_json: bool = _JSON,
    ) -> None:
        """Re-embed a gallery's kept images with the current model, measuring their ink statistics too
        (needs galleries enrolled with --keep-crops). Without --force, only when the model or the
        cleaning (--cleaner) changed or some samples lack ink statistics (enrolled before galleries
        kept them)."""
        with command_errors():
            from .gallery import reindex_gallery

            key = _key(key_file)
            pipe = _pipeline(bundle, threads, precision, cleaner=cleaner, gallery=gallery)
            result = reindex_gallery(gallery, pipe, key=key, force=force)

            def human() -> None:
                if result.ink_measured or result.ink_missing:
                    typer.echo(f"measured the ink statistics (and contour hinge) of {result.ink_measured} "
                               f"signature(s) enrolled before galleries kept them; {result.ink_missing} without a "
                               f"kept image (re-enrol those writers for the learned scorer)")
                elif result.changed:
                    cleaning = (f", cleaning {result.previous_cleaning or 'classic'} -> {result.cleaning}"
                                if result.cleaning and result.previous_cleaning != result.cleaning else "")
                    typer.echo(f"reindexed {result.samples} signature(s): model {result.previous_model_sha256[:12]} "
                               f"-> {result.model_sha256[:12]}{cleaning} ({result.seconds:.1f} s)")
                else:
                    typer.echo(f"already up to date: {result.samples} signature(s) embedded with model "
                               f"{result.model_sha256[:12]} (use --force to re-embed anyway)")

            emit(result, as_json, human)

    @app.command("gallery-info")
    def gallery_info(
        gallery: Path = typer.Argument(..., help="Gallery directory."),
        list_writers: bool = typer.Option(False, "--writers", help="Also list the writers."),
        key_file: Optional[Path] = _KEY_FILE,
        bundle: Optional[Path] = _BUNDLE,
        precision: str = _PRECISION,
        as_json: bool = _JSON,
    ) -> None:
        """Writers, samples, model, encryption, index and size of a gallery."""
        with command_errors():
            from .gallery import Gallery, ink_layouts_compatible

            key = _key(key_file)
            pipe = _pipeline(bundle, 1, precision)  # only its model's sha256 and ink layout are compared
            with Gallery(gallery, pipe, key=key, create=False, _check_model=False) as g:
                info = g.info()
                writers = g.writers() if list_writers else None
            data = {**_dict(info), "model_matches": info.model_sha256 == pipe.model_sha256,
                    "ink_layout_matches": ink_layouts_compatible(info.ink_layout, pipe.ink_layout)}
            if writers is not None:
                data["writer_list"] = [_dict(w) for w in writers]

            def human() -> None:
                rows = [("path", info.path), ("writers", info.writers), ("samples", info.samples),
                        ("kept images", info.crops),
                        ("model", f"{info.model_sha256[:16]} {info.model_name} {info.model_version}".rstrip()),
                        ("model matches", "yes" if data["model_matches"] else "NO: run `sigedge reindex`"),
                        ("cleaning", info.cleaning or "classic (not recorded)"),
                        ("ink measured as", info.ink_layout or "not recorded"),
                        ("ink matches", "yes" if data["ink_layout_matches"] else
                         f"NO: this bundle measures {pipe.ink_layout!r}; run `sigedge reindex`"),
                        ("dim", info.dim), ("encrypted", "yes" if info.encrypted else "no"),
                        ("created", info.created), ("generation", info.generation),
                        ("index", f"{info.index_elements} elements, {info.index_deleted} erased, "
                                  f"saved at generation {info.index_generation}"),
                        ("hnsw", ", ".join(f"{k}={v}" for k, v in info.hnsw.items())),
                        ("audit events", info.audit_events), ("disk", _human_bytes(info.disk_bytes))]
                print_table(["field", "value"], rows)
                if writers is not None:
                    typer.echo("")
                    print_table(["writer", "samples", "first enrolled", "last enrolled", "audit ref"],
                                [(w.writer_id, w.samples, w.first_enrolled, w.last_enrolled, w.ref) for w in writers])

            emit(data, as_json, human)


def _identify_page(gallery_cls, gallery: Path, image: Path, pipe, key, k: int, show_all: bool, as_json: bool) -> None:
    """identify --page: every signature detected on the page, each identified on its own."""
    from .errors import NoSignatureError

    found = pipe.signatures_on_page(image)
    if not found:
        raise NoSignatureError(f"{_name(image)}: no signature found on the page")
    rows = []
    with gallery_cls(gallery, pipe, key=key, create=False) as g:
        threshold = g.identify_threshold
        for i, sig in enumerate(found):
            try:
                matches = g.identify(sig.crop, k=k, include_rejected=True)
            except NoSignatureError:
                matches = []
            accepted = [m for m in matches if m.accepted]
            rows.append({"signature": i + 1, "box": [round(v, 1) for v in sig.detection.box],
                         "detection_score": sig.detection.score,
                         "decision": "match" if accepted else "unknown",
                         "writer": accepted[0].writer_id if accepted else None,
                         "matches": [_dict(m) for m in (matches if show_all else accepted)]})
    data = {"page": _name(image), "threshold": threshold, "signatures": rows}

    def human() -> None:
        typer.echo(f"{len(rows)} signature(s) on {_name(image)}, threshold {threshold:.4f}")
        print_table(["#", "box", "detection", "decision", "writer", "score"],
                    [(r["signature"], " ".join(str(round(v)) for v in r["box"]), r["detection_score"], r["decision"],
                      r["writer"] or "-", r["matches"][0]["score"] if r["matches"] else "-") for r in rows])

    emit(data, as_json, human)


def _dict(obj) -> dict:
    from dataclasses import asdict

    return asdict(obj)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
