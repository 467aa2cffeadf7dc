"""The gallery commands: enroll, identify, remove, audit check, reindex, gallery-info."""

from __future__ import annotations

import json
import os

import pytest
import typer
from typer.testing import CliRunner

from sigedge.gallery import Gallery
from sigedge.gallery_cli import register, verify_in_gallery
from tests.test_gallery import gallery_state
from tests.test_gallery_support import signature_png


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("SIGEDGE_GALLERY_KEY", raising=False)


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture(scope="module")
def sigs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sigs")
    return {w: [str(signature_png(d / f"{w}_{s}.png", w, s)) for s in range(3)] for w in range(3)}


def run(app, *args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sigedge: error: ")
    return lines[0]


def test_enroll_identify_info_remove(app, tmp_path, sigs):
    g = tmp_path / "g"
    r = run(app, "enroll", g, "alice", *sigs[0], "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["writer_id"] == "alice" and data["added"] == 3 and data["new_writer"] is True
    r = run(app, "enroll", g, "bob", *sigs[1])
    assert r.exit_code == 0 and "enrolled 3 signature(s) of 'bob'" in r.stdout

    r = run(app, "identify", g, sigs[0][0], "--k", "2", "--all", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["decision"] in ("match", "unknown") and len(data["matches"]) == 2
    assert {m["writer_id"] for m in data["matches"]} == {"alice", "bob"}
    assert all({"score", "accepted", "references", "rank"} <= set(m) for m in data["matches"])
    r = run(app, "identify", g, sigs[0][0])
    assert r.exit_code == 0 and ("MATCH" in r.stdout or "UNKNOWN" in r.stdout)

    r = run(app, "gallery-info", g, "--json", "--writers")
    info = json.loads(r.stdout)
    assert r.exit_code == 0 and info["writers"] == 2 and info["samples"] == 6 and info["model_matches"]
    assert [w["writer_id"] for w in info["writer_list"]] == ["alice", "bob"]
    assert info["ink_layout"].startswith("statistics+hinge:")  # how the references' ink was measured
    assert info["ink_layout_matches"]
    r = run(app, "gallery-info", g)
    assert r.exit_code == 0 and "writers" in r.stdout and "samples" in r.stdout and "ink measured as" in r.stdout

    assert verify_in_gallery(g, "alice", sigs[0][1]).similarities.__len__() == 3

    r = run(app, "remove", g, "alice", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["samples_erased"] == 3
    r = run(app, "remove", g, "alice")
    assert r.exit_code == 6 and "no writer 'alice'" in one_error_line(r)
    r = run(app, "audit", "check", g)
    assert r.exit_code == 0, r.output
    r = run(app, "audit", "check", g, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True


def test_failed_enroll_changes_nothing(app, tmp_path, sigs):
    g = tmp_path / "g"
    r = run(app, "enroll", g, "alice", sigs[0][0], tmp_path / "missing.png")
    assert r.exit_code == 3 and "missing.png" in one_error_line(r)
    assert not g.exists()  # not even an empty gallery
    assert run(app, "enroll", g, "alice", *sigs[0]).exit_code == 0
    before = gallery_state(g)
    (tmp_path / "blank.png").write_bytes(b"")
    r = run(app, "enroll", g, "bob", sigs[1][0], tmp_path / "blank.png")
    assert r.exit_code == 3
    r = run(app, "enroll", g, "", sigs[1][0])
    assert r.exit_code == 2
    assert gallery_state(g) == before


def test_commands_on_a_missing_gallery(app, tmp_path, sigs):
    for args in (("identify", tmp_path / "none", sigs[0][0]), ("remove", tmp_path / "none", "a"),
                 ("gallery-info", tmp_path / "none"), ("reindex", tmp_path / "none"),
                 ("audit", "check", tmp_path / "none")):
        r = run(app, *args)
        assert r.exit_code == 6, (args, r.output)
        assert "no gallery" in one_error_line(r)
        assert not (tmp_path / "none").exists()


def test_model_guard_and_reindex(app, tmp_path, sigs):
    kept, lost = tmp_path / "kept", tmp_path / "lost"
    assert run(app, "enroll", kept, "alice", *sigs[0], "--keep-crops").exit_code == 0
    assert run(app, "enroll", lost, "alice", *sigs[0]).exit_code == 0
    # The float embedder is another model (another sha256): the gallery refuses it.
    r = run(app, "identify", kept, sigs[0][0], "--precision", "float")
    assert r.exit_code == 6 and "sigedge reindex" in one_error_line(r)
    r = run(app, "reindex", lost, "--precision", "float")
    assert r.exit_code == 6 and "--keep-crops" in one_error_line(r)
    r = run(app, "reindex", kept, "--precision", "float", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["changed"] is True and json.loads(r.stdout)["samples"] == 3
    assert run(app, "identify", kept, sigs[0][0], "--precision", "float").exit_code == 0
    assert run(app, "identify", kept, sigs[0][0]).exit_code == 6  # now the int8 one is the other model
    r = run(app, "gallery-info", kept)
    assert r.exit_code == 0 and "NO: run `sigedge reindex`" in r.stdout
    r = run(app, "reindex", kept, "--precision", "float")
    assert r.exit_code == 0 and "already up to date" in r.stdout


def test_gallery_commands_clean_as_the_gallery_recorded(app, tmp_path, sigs, caplog):
    """A gallery enrolled with --cleaner learned: later commands without --cleaner clean the
    same way (a second enrolment is accepted, no mismatch warning); another cleaning is refused
    for enrolment and taken by reindex."""
    import logging

    g = tmp_path / "g"
    assert run(app, "enroll", g, "alice", *sigs[0], "--keep-crops", "--cleaner", "learned").exit_code == 0
    learned = json.loads(run(app, "gallery-info", g, "--json").stdout)["cleaning"]
    assert learned.startswith("learned:")
    with caplog.at_level(logging.WARNING, logger="sigedge.gallery"):
        assert run(app, "enroll", g, "bob", *sigs[1], "--keep-crops").exit_code == 0
        r = run(app, "identify", g, sigs[0][0], "--json")
        assert r.exit_code == 0, r.output
    assert not [rec for rec in caplog.records if "cleaned" in rec.getMessage()]
    assert len(verify_in_gallery(g, "alice", sigs[0][1]).similarities) == 3

    before = gallery_state(g)
    r = run(app, "enroll", g, "carol", *sigs[2], "--cleaner", "classic")
    assert r.exit_code == 6 and "cleaned" in one_error_line(r)
    assert gallery_state(g) == before
    r = run(app, "enroll", g, "carol", *sigs[2], "--cleaner", "sideways")
    assert r.exit_code == 2 and "--cleaner" in one_error_line(r)

    r = run(app, "reindex", g)
    assert r.exit_code == 0 and "already up to date" in r.stdout
    r = run(app, "reindex", g, "--cleaner", "classic", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["changed"] and (data["previous_cleaning"], data["cleaning"]) == (learned, "classic")
    assert json.loads(run(app, "gallery-info", g, "--json").stdout)["cleaning"] == "classic"
    assert run(app, "enroll", g, "carol", *sigs[2]).exit_code == 0


def test_learned_gallery_with_a_bundle_that_has_no_cleaner(app, tmp_path, sigs):
    """The gallery's references were cleaned by the learned cleaner, the bundle has none: the
    commands that clean say so in one line (exit 6) and take --cleaner; erasing still works."""
    import shutil

    from sigedge.bundle import default_bundle_dir

    bundle = tmp_path / "b"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"] = {r: m for r, m in manifest["models"].items() if not r.startswith("cleaner")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    g = tmp_path / "g"
    assert run(app, "enroll", g, "alice", *sigs[0], "--cleaner", "learned").exit_code == 0
    for args in (("identify", g, sigs[0][0]), ("enroll", g, "bob", *sigs[1]), ("reindex", g)):
        r = run(app, *args, "--bundle", bundle)
        assert r.exit_code == 6, (args, r.output)
        line = one_error_line(r)
        assert "cleaned 'learned:" in line and "no 'cleaner' model" in line and "--cleaner classic" in line
    r = run(app, "identify", g, sigs[0][0], "--bundle", bundle, "--cleaner", "classic", "--json")
    assert r.exit_code == 0, r.output
    r = run(app, "gallery-info", g, "--bundle", bundle, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["cleaning"].startswith("learned:")
    r = run(app, "remove", g, "alice", "--bundle", bundle)
    assert r.exit_code == 0, r.output


def test_encrypted_gallery_with_key_file(app, tmp_path, sigs):
    key = os.urandom(32)
    kf = tmp_path / "gallery.key"
    kf.write_text(key.hex() + "\n")
    g = tmp_path / "g"
    assert run(app, "enroll", g, "alice", *sigs[0], "--key-file", kf).exit_code == 0
    r = run(app, "identify", g, sigs[0][0])
    assert r.exit_code == 6 and "encrypted" in one_error_line(r)
    bad = tmp_path / "bad.key"
    bad.write_bytes(os.urandom(32))
    r = run(app, "identify", g, sigs[0][0], "--key-file", bad)
    assert r.exit_code == 6 and "wrong key" in one_error_line(r)
    r = run(app, "identify", g, sigs[0][0], "--key-file", tmp_path / "nokey")
    assert r.exit_code == 2
    assert run(app, "identify", g, sigs[0][0], "--key-file", kf).exit_code == 0
    r = run(app, "gallery-info", g, "--json", env={"SIGEDGE_GALLERY_KEY": key.hex()})
    assert r.exit_code == 0 and json.loads(r.stdout)["encrypted"] is True
    assert run(app, "audit", "check", g).exit_code == 0  # no key needed
    assert verify_in_gallery(g, "alice", sigs[0][1], key_file=kf).similarities
    with Gallery(g, key=key) as gal:
        assert [w.writer_id for w in gal.writers()] == ["alice"]
