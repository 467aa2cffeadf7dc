"""Enrolling hostile inputs: one-line errors with their documented exit codes, gallery untouched;
valid but unusual formats (16-bit, palette, CMYK, multi-page TIFF, odd file names) enrol fine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sigedge.errors import SigedgeError
from sigedge.gallery import Gallery
from sigedge.gallery_cli import register
from tests.hostile import HostileCase, make_hostile_corpus
from tests.test_gallery import gallery_state
from tests.test_gallery_support import signature_png

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("SIGEDGE_GALLERY_KEY", raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[HostileCase]:
    return make_hostile_corpus(tmp_path_factory.mktemp("hostile"))


def test_the_corpus_is_complete(corpus):
    names = {c.name for c in corpus}
    assert {"zero_bytes", "text_file", "truncated_png", "truncated_jpeg", "png_claiming_100000x100000",
            "one_pixel", "all_white", "all_black", "png_16bit_signature", "cmyk_jpeg_signature",
            "palette_png_signature", "multipage_tiff_signature", "directory", "missing_path",
            "non_utf8_name_junk", "non_utf8_name_signature"} <= names
    for c in corpus:
        if c.skip:
            continue
        if c.name == "missing_path":
            assert not os.path.lexists(c.raw_path)
        else:
            assert os.path.lexists(c.raw_path), c.name


def test_enroll_api(tmp_path, pipeline, corpus):
    path = tmp_path / "g"
    with Gallery(path, pipeline) as g:
        g.enroll("base", [signature_png(tmp_path / "base.png", 1, 0)])
        for case in corpus:
            if case.skip:
                continue
            before = gallery_state(path)
            n_before = g.sample_count
            if case.exit_code == 0:
                result = g.enroll(f"ok-{case.name}", [case.path])
                assert result.added == 1, case.name
                assert g.sample_count == n_before + 1
                continue
            with pytest.raises(SigedgeError) as info:
                g.enroll("victim", [signature_png(tmp_path / "good.png", 2, 0), case.path])
            exc = info.value
            assert exc.exit_code == case.exit_code, (case.name, type(exc).__name__, str(exc))
            message = str(exc)
            assert message and "\n" not in message, (case.name, message)
            message.encode("utf-8")  # printable: no lone surrogates from odd file names
            assert gallery_state(path) == before, case.name
            assert "victim" not in g and g.sample_count == n_before


def test_enroll_cli(tmp_path, corpus):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    path = tmp_path / "g"
    good = str(signature_png(tmp_path / "good.png", 2, 0))
    assert runner.invoke(app, ["enroll", str(path), "base", good]).exit_code == 0
    for case in corpus:
        if case.skip:
            continue
        before = gallery_state(path)
        r = runner.invoke(app, ["enroll", str(path), f"w-{case.name}", good, case.path])
        assert r.exit_code == case.exit_code, (case.name, r.output)
        if case.exit_code:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("sigedge: error: "), (case.name, r.stderr)
            assert gallery_state(path) == before, case.name


def test_enroll_cli_subprocess_with_a_non_utf8_name(tmp_path, corpus):
    """Real argv bytes, not a test runner: the file name is not valid UTF-8."""
    case = next(c for c in corpus if c.name == "non_utf8_name_junk")
    if case.skip:
        pytest.skip(case.skip)
    path = tmp_path / "g"
    code = ("import sys, typer; from sigedge.gallery_cli import register; app = typer.Typer(); "
            "register(app); app(prog_name='sigedge')")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SIGEDGE_GALLERY_KEY", None)
    good = os.fsencode(signature_png(tmp_path / "good.png", 2, 0))
    proc = subprocess.run([sys.executable.encode(), b"-c", code.encode(), b"enroll", os.fsencode(path), b"w",
                           good, case.raw_path], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    err = [line for line in err if not line.startswith("INFO: Created TensorFlow Lite")]
    assert len(err) == 1 and err[0].startswith("sigedge: error: ") and "\\xe9" in err[0], err
    assert not path.exists()
