"""Several processes on one gallery: writers serialised, nothing lost; SIGKILL at random moments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sigedge.gallery import Gallery, GalleryOptions

REPO = Path(__file__).resolve().parent.parent
KILL_SCRIPT = REPO / "benchmarks" / "gallery_kill.py"

# A child enrols `n` writers under `prefix`, waiting for a start file so both start together.
CHILD = r"""
import os, sys, time, numpy as np
sys.path.insert(0, {bench!r})
from gallery_kill import VectorEmbedder, writer_vectors
from sigedge.gallery import Gallery, GalleryOptions
path, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
g = Gallery(path, VectorEmbedder(), options=GalleryOptions(identify_threshold=0.3, lock_timeout=120))
print("READY", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
for j in range(n):
    g._enroll_embeddings(f"{{prefix}}-{{j}}", writer_vectors(f"{{prefix}}-{{j}}"))
    if j % 5 == 0:
        g._identify_embedding(writer_vectors(f"{{prefix}}-0").mean(axis=0), k=1)
g.close()
print("DONE", flush=True)
"""


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SIGEDGE_GALLERY_KEY", None)
    return env


def test_two_processes_enrolling_at_once(tmp_path):
    sys.path.insert(0, str(KILL_SCRIPT.parent))
    try:
        from gallery_kill import VectorEmbedder, writer_vectors
    finally:
        sys.path.remove(str(KILL_SCRIPT.parent))
    path = tmp_path / "g"
    go = tmp_path / "go"
    code = CHILD.format(bench=str(KILL_SCRIPT.parent))
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), prefix, str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), bufsize=0)
             for prefix in ("a", "b")]
    for p in procs:
        assert p.stdout.readline().strip() == b"READY", p.stderr.read()
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-2000:]
        assert out.strip().endswith(b"DONE")
    with Gallery(path, VectorEmbedder(), options=GalleryOptions(identify_threshold=0.3)) as g:
        writers = {w.writer_id: w.samples for w in g.writers()}
        assert writers == {f"{p}-{j}": 3 for p in "ab" for j in range(n)}
        for p in "ab":
            for j in (0, n // 2, n - 1):
                name = f"{p}-{j}"
                np.testing.assert_allclose(g.references(name), writer_vectors(name), atol=1e-6)
                assert g._identify_embedding(writer_vectors(name).mean(axis=0), k=1)[0].writer_id == name
        assert g.info().index_elements == 2 * n and g.sample_count == 2 * n * 3
        report = g.check_audit()
        assert report.ok and report.lines == 1 + 2 * n  # create + every enrolment, none lost or torn


def test_lock_timeout_is_a_clear_error(tmp_path):
    sys.path.insert(0, str(KILL_SCRIPT.parent))
    try:
        from gallery_kill import VectorEmbedder, writer_vectors
    finally:
        sys.path.remove(str(KILL_SCRIPT.parent))
    from sigedge.errors import GalleryError
    from sigedge.gallery_store import FileLock

    path = tmp_path / "g"
    Gallery(path, VectorEmbedder()).close()
    holder = FileLock(path / "lock", 1)
    holder.acquire()
    try:
        with Gallery(path, VectorEmbedder(), options=GalleryOptions(lock_timeout=0.2)) as g:
            t0 = time.monotonic()
            with pytest.raises(GalleryError, match="locked by another process"):
                g._enroll_embeddings("x", writer_vectors("x"))
            assert time.monotonic() - t0 < 5
            assert "x" not in g
    finally:
        holder.release()


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path):
    """The short version of benchmarks/gallery_kill.py (200 kills there)."""
    out = tmp_path / "kill.json"
    proc = subprocess.run([sys.executable, str(KILL_SCRIPT), "--kills", "8", "--seed", "11", "--work", "0.5",
                           "--dir", str(tmp_path), "--out", str(out)], capture_output=True, env=_env(), timeout=300)
    assert out.exists(), proc.stderr.decode()[-2000:]
    result = json.loads(out.read_text())
    assert result["kills"] == 8
    for key in ("corrupt", "lost", "half", "resurrected", "unexpected", "identify_failures", "child_errors"):
        assert result[key] == 0, (key, result["problems"])
    assert result["acknowledged_enrolments"] > 0
    assert proc.returncode == 0


def test_kill_benchmark_counts_only_whole_lines(monkeypatch):
    """A kill can cut the child's last line short (under PYTHONUNBUFFERED a line was once
    written in parts); a cut line was not said, so an ACK cut short is no acknowledgement."""
    monkeypatch.syspath_prepend(str(KILL_SCRIPT.parent))
    from gallery_kill import whole_lines

    assert whole_lines(["READY\n"], b"BEGIN enroll r1-w0\nACK enroll r1-w0\nBEGIN enroll r1-w1\nACK enr") == [
        "READY", "BEGIN enroll r1-w0", "ACK enroll r1-w0", "BEGIN enroll r1-w1"]
    assert whole_lines(["REA"], b"") == []
    assert whole_lines(["READY\n"], b"DONE\n") == ["READY", "DONE"]
