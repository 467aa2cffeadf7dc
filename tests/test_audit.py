"""The audit log: hash chain, chain head in the database, tamper detection, crash recovery."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sigedge.audit import AuditLog, line_hash, verify_chain
from sigedge.errors import GalleryError
from sigedge.gallery import Gallery, check_audit
from sigedge.gallery_cli import register
from tests.test_gallery_support import SketchEmbedder, signature_png, unit_vectors


@pytest.fixture()
def gallery(tmp_path, embedder):
    """A gallery with create, 3 enrolments, a verify, an identify and a remove in its log."""
    path = tmp_path / "g"
    with Gallery(path, embedder) as g:
        for w in range(3):
            g.enroll(f"w{w}", [signature_png(tmp_path / f"{w}_{s}.png", w, s) for s in range(2)])
        q = signature_png(tmp_path / "q.png", 1, 9)
        g.verify("w1", q)
        g.identify(q)
        g.remove("w2")
    return path


N = 7  # events in the fixture's log


def _lines(path):
    return (path / "audit.jsonl").read_bytes().splitlines(keepends=True)


def _write(path, lines):
    (path / "audit.jsonl").write_bytes(b"".join(lines))


def _rehash(entry: dict, prev: str) -> bytes:
    entry = dict(entry, prev=prev)
    entry["hash"] = line_hash(entry)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _cli(args):
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, args)


def test_intact_log(gallery):
    report = check_audit(gallery)
    assert report.ok and report.lines == report.head_seq == N
    events = [json.loads(x)["event"] for x in _lines(gallery)]
    assert events == ["create", "enroll", "enroll", "enroll", "verify", "identify", "remove"]
    for raw in _lines(gallery):
        entry = json.loads(raw)
        assert {"seq", "time", "event", "prev", "hash"} <= set(entry)
        assert "w2" not in raw.decode() and "w1" not in raw.decode()  # pseudonyms only
    r = _cli(["audit", "check", str(gallery)])
    assert r.exit_code == 0 and "OK" in r.output


def test_edited_line(gallery):
    lines = _lines(gallery)
    entry = json.loads(lines[4])
    assert entry["event"] == "verify"
    edited = dict(entry, score=0.99)
    lines[4] = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == 5 and "edited" in report.reason
    r = _cli(["audit", "check", str(gallery)])
    assert r.exit_code == 6
    err = r.output.strip().splitlines()
    assert len(err) == 1 and "line 5" in err[0]


def test_edited_line_with_recomputed_hash(gallery):
    lines = _lines(gallery)
    entry = json.loads(lines[2])
    lines[2] = _rehash(dict(entry, samples=99), entry["prev"])
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == 4  # the next line no longer chains to it


def test_whole_chain_rewritten(gallery):
    lines = _lines(gallery)
    prev = "0" * 64
    out = []
    for i, raw in enumerate(lines):
        entry = json.loads(raw)
        if i == 4:
            entry["score"] = 0.123
        out.append(_rehash(entry, prev))
        prev = json.loads(out[-1])["hash"]
    _write(gallery, out)
    report = check_audit(gallery)
    assert not report.ok and report.line == N and "chain head" in report.reason


def test_deleted_middle_line(gallery):
    lines = _lines(gallery)
    del lines[3]
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == 4 and "inserted or deleted" in report.reason


def test_deleted_last_line(gallery):
    _write(gallery, _lines(gallery)[:-1])
    report = check_audit(gallery)
    assert not report.ok and "deleted from the end" in report.reason and report.line == N
    r = _cli(["audit", "check", str(gallery)])
    assert r.exit_code == 6 and f"line {N}" in r.output
    # opening the gallery does not "repair" a deletion: it is not a crash
    with Gallery(gallery, SketchEmbedder()) as g:
        assert not g.check_audit().ok


def test_all_lines_deleted(gallery):
    _write(gallery, [])
    assert not check_audit(gallery).ok


def test_inserted_line(gallery):
    lines = _lines(gallery)
    lines.insert(2, lines[2])  # a copy of line 3 after it
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == 4


def test_forged_line_appended(gallery):
    lines = _lines(gallery)
    last = json.loads(lines[-1])
    lines.append(_rehash({"seq": last["seq"] + 1, "time": last["time"], "event": "enroll", "writer": "w:00"},
                         last["hash"]))
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == N + 1 and "beyond" in report.reason


def test_partial_last_line(gallery):
    data = (gallery / "audit.jsonl").read_bytes()
    (gallery / "audit.jsonl").write_bytes(data[:-20])
    report = check_audit(gallery)
    assert not report.ok and report.line == N


def test_garbage_line(gallery):
    lines = _lines(gallery)
    lines[1] = b"\xff\xfe not json\n"
    _write(gallery, lines)
    report = check_audit(gallery)
    assert not report.ok and report.line == 2


def test_crash_before_append_is_recovered(tmp_path, monkeypatch):
    emb = SketchEmbedder(sha256="vectors")
    path = tmp_path / "g"
    g = Gallery(path, emb)
    g._enroll_embeddings("a", unit_vectors(2, 1))

    def killed(self, line):
        raise KeyboardInterrupt("killed before the append")

    monkeypatch.setattr(AuditLog, "append", killed)
    with pytest.raises(KeyboardInterrupt):
        g._enroll_embeddings("b", unit_vectors(2, 2))  # committed, its line not yet written
    monkeypatch.undo()
    g._store.close()
    g._closed = True
    assert len(_lines(path)) == 2
    report = check_audit(path)  # recovers the pending line first: a crash is not tampering
    assert report.ok and report.lines == 3
    with Gallery(path, emb) as g2:
        assert "b" in g2 and g2.check_audit().ok


def test_crash_mid_append_is_recovered(tmp_path, monkeypatch):
    emb = SketchEmbedder(sha256="vectors")
    path = tmp_path / "g"
    g = Gallery(path, emb)
    g._enroll_embeddings("a", unit_vectors(2, 1))
    real_append = AuditLog.append

    def half(self, line):
        with open(self.path, "ab") as f:
            f.write(line.encode()[: len(line) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(AuditLog, "append", half)
    with pytest.raises(KeyboardInterrupt):
        g._enroll_embeddings("b", unit_vectors(2, 2))
    monkeypatch.setattr(AuditLog, "append", real_append)
    g._store.close()
    g._closed = True
    with Gallery(path, emb) as g2:  # any open recovers
        assert g2.check_audit().ok and len(_lines(path)) == 3


def test_verify_chain_on_bytes():
    assert verify_chain(b"", 0, "0" * 64).ok
    assert not verify_chain(b"", 1, "ab").ok


def test_check_audit_of_a_non_gallery(tmp_path):
    with pytest.raises(GalleryError):
        check_audit(tmp_path)
    r = _cli(["audit", "check", str(tmp_path / "none")])
    assert r.exit_code == 6
