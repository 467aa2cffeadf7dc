"""Shared plumbing of the ``sigedge`` command: error mapping, output, progress.

Every command body runs inside :func:`command_errors`, which turns a
:class:`~sigedge.errors.SigedgeError` into one line on stderr and its exit code, and any
other exception into exit code 7 (with the traceback only under ``--debug``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import typer

from .errors import SigedgeError

__all__ = ["command_errors", "emit", "make_pipeline", "print_table", "progress", "to_jsonable", "fail"]

log = logging.getLogger("sigedge.cli")
T = TypeVar("T")
INTERNAL_ERROR_EXIT = 7


def parse_rotations(text: str | None) -> tuple[float, ...] | None:
    """``--query-rotations`` ("-10,0,10") as angles; None stays None (the bundle's)."""
    from .errors import UsageError

    if text is None:
        return None
    try:
        angles = tuple(float(a) for a in text.split(","))
    except ValueError:
        raise UsageError(f"--query-rotations: comma-separated angles in degrees, with 0, not {text!r}") from None
    if not all(-90.0 <= a <= 90.0 for a in angles):
        raise UsageError(f"--query-rotations: angles between -90 and 90 degrees, not {text!r}")
    if len(set(angles)) != len(angles):  # each would be described again, for nothing
        raise UsageError(f"--query-rotations: an angle is repeated in {text!r}")
    return angles


def make_pipeline(bundle: Path | None, threads: int = 1, precision: str = "int8", threshold: float | None = None,
                  operating_point: str | None = None, clean: bool = True, scorer: str = "bundle",
                  query_rotations: str | None = None, cleaner: str | None = None, gallery: Path | None = None):
    """The :class:`~sigedge.pipeline.Pipeline` a command's options describe (checked here, so
    that a bad value is a usage error, exit 2). ``cleaner``: classic, learned or auto (None: as
    ``gallery`` recorded it cleaned its references, else the default of
    :class:`~sigedge.clean.CleanOptions`)."""
    from .clean import CleanOptions
    from .errors import UsageError
    from .pipeline import Pipeline, PipelineOptions

    if precision not in ("int8", "float"):
        raise UsageError(f"--precision must be int8 or float, not {precision!r}")
    if scorer not in ("bundle", "cosine"):
        raise UsageError(f"--scorer must be bundle or cosine, not {scorer!r}")
    if cleaner not in (None, "classic", "learned", "auto"):
        raise UsageError(f"--cleaner must be classic, learned or auto, not {cleaner!r}")
    clean_options = CleanOptions() if cleaner is None else CleanOptions(method=cleaner)  # type: ignore[arg-type]
    opts = PipelineOptions(threads=threads, precision=precision, threshold=threshold,  # type: ignore[arg-type]
                           operating_point=operating_point, clean=clean, scorer=scorer,  # type: ignore[arg-type]
                           query_rotations=parse_rotations(query_rotations), clean_options=clean_options)
    if gallery is not None and cleaner is None:
        from .gallery import pipeline_for_gallery

        return pipeline_for_gallery(gallery, bundle, opts)
    return Pipeline(bundle, opts)


def fail(message: str, code: int) -> None:
    """Print one line on stderr and leave with ``code``."""
    typer.echo(f"sigedge: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except SigedgeError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # a bug: say so, but still one line unless debugging
        if os.environ.get("SIGEDGE_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
             "(set SIGEDGE_DEBUG=1 for the traceback)", INTERNAL_ERROR_EXIT)


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return os.fsencode(obj).decode("utf-8", "backslashreplace")
    return obj


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``human`` to print it for a person."""
    if as_json:
        typer.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))
    else:
        human()


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    typer.echo("  ".join("-" * w for w in widths))
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def progress(items: Sequence[T], label: str, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar on stderr when it is a terminal (never in --json output)."""
    if not enabled or len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    with typer.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar
