"""Encryption at rest: nothing readable on disk, the key is required, a wrong key is a clear error."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest

pytest.importorskip("cryptography")

from sigedge.crypto import parse_key  # noqa: E402
from sigedge.errors import GalleryError, UsageError  # noqa: E402
from sigedge.gallery import Gallery, check_audit  # noqa: E402
from tests.test_gallery import _vector_chunks, file_bytes  # noqa: E402
from tests.test_gallery_support import signature_png  # noqa: E402

SECRET_WRITER = "Zoë Secret-Writer 7731"


@pytest.fixture(scope="module")
def sigs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sigs")
    return {w: [signature_png(d / f"{w}_{s}.png", w, s) for s in range(4)] for w in range(3)}


@pytest.fixture()
def key():
    return os.urandom(32)


def _make(path, embedder, sigs, key):
    with Gallery(path, embedder, key=key, keep_crops=True) as g:
        g.enroll(SECRET_WRITER, sigs[0][:3])
        g.enroll("other", sigs[1][:3])
        return g.references(SECRET_WRITER)


def test_nothing_readable_on_disk(tmp_path, embedder, sigs, key):
    path = tmp_path / "g"
    vectors = _make(path, embedder, sigs, key)
    with Gallery(path, embedder, key=key) as g:  # an identify too, so the log has every kind
        assert g.identify(sigs[0][3])[0].writer_id == SECRET_WRITER
        assert g.encrypted
    data = file_bytes(path)
    assert SECRET_WRITER.encode("utf-8") not in data and SECRET_WRITER.encode("utf-16-le") not in data
    assert b"other" not in data
    assert not any(c in data for v in vectors for c in _vector_chunks(v))
    crop = sigs[0][0].read_bytes()
    assert crop[64:128] not in data and crop[-64:] not in data
    assert list(path.glob("index-*.hnsw.enc")) and not list(path.glob("index-*.hnsw"))
    # the same check on an unencrypted gallery finds them: the search is meaningful
    plain = tmp_path / "plain"
    plain_vectors = _make(plain, embedder, sigs, None)
    plain_data = file_bytes(plain)
    assert SECRET_WRITER.encode() in plain_data
    assert all(c in plain_data for v in plain_vectors for c in _vector_chunks(v))


def test_key_required_and_checked(tmp_path, embedder, sigs, key):
    path = tmp_path / "g"
    _make(path, embedder, sigs, key)
    with pytest.raises(GalleryError, match="encrypted: give its key"):
        Gallery(path, embedder)
    with pytest.raises(GalleryError, match="wrong key"):
        Gallery(path, embedder, key=os.urandom(32))
    with pytest.raises(UsageError, match="32 bytes"):
        Gallery(path, embedder, key=b"short")
    with Gallery(path, embedder, key=key.hex()) as g:  # hex text works too
        assert g.verify(SECRET_WRITER, sigs[0][3]).genuine
    assert check_audit(path).ok  # the audit log is checked without the key


def test_key_from_environment(tmp_path, embedder, sigs, key, monkeypatch):
    path = tmp_path / "g"
    monkeypatch.setenv("SIGEDGE_GALLERY_KEY", base64.b64encode(key).decode())
    _make(path, embedder, sigs, None)  # key=None: taken from the environment, so encrypted
    with Gallery(path, embedder) as g:
        assert g.encrypted and g.identify(sigs[1][3])[0].writer_id == "other"
    monkeypatch.delenv("SIGEDGE_GALLERY_KEY")
    with pytest.raises(GalleryError, match="encrypted"):
        Gallery(path, embedder)
    with Gallery(path, embedder, key=key) as g:
        assert len(g) == 2


def test_key_given_to_an_unencrypted_gallery(tmp_path, embedder, sigs, key):
    _make(tmp_path / "g", embedder, sigs, None)
    with pytest.raises(GalleryError, match="not encrypted"):
        Gallery(tmp_path / "g", embedder, key=key)


def test_encrypted_index_reload_and_erasure(tmp_path, embedder, sigs, key):
    path = tmp_path / "g"
    vectors = _make(path, embedder, sigs, key)
    with Gallery(path, embedder, key=key) as g:  # loads the encrypted index file
        assert g.info().index_elements == 2
        assert g.remove(SECRET_WRITER) == 3
        assert g.identify(sigs[0][3]) == []
    with Gallery(path, embedder, key=key) as g:
        assert [w.writer_id for w in g.writers()] == ["other"]
        np.testing.assert_allclose(g.references("other")[0], embedder.embed(sigs[1][0]), atol=1e-6)
    assert not any(c in file_bytes(path) for v in vectors for c in _vector_chunks(v))


def test_parse_key_forms():
    k = bytes(range(32))
    assert parse_key(k) == k
    assert parse_key(k.hex()) == k
    assert parse_key(k.hex().upper().encode()) == k
    assert parse_key(base64.b64encode(k).decode()) == k
    assert parse_key(base64.urlsafe_b64encode(k)) == k
    for bad in ("", "00" * 31, "zz" * 32, b"\xff" * 31, 12):
        with pytest.raises(UsageError):
            parse_key(bad)  # type: ignore[arg-type]


def test_ink_statistics_are_encrypted_and_erased(tmp_path, pipeline, sigs, key):
    """With the real pipeline the gallery keeps each sample's ink statistics: sealed like the
    vectors, and gone with the writer."""
    path = tmp_path / "g"
    inks = pipeline.describe_many(sigs[0][:3])[1]
    with Gallery(path, pipeline, key=key) as g:
        g.enroll(SECRET_WRITER, sigs[0][:3])
        g.enroll("other", sigs[1][:3])
        np.testing.assert_allclose(g._writer_samples(SECRET_WRITER)[1], inks, atol=1e-6)
        assert g.verify(SECRET_WRITER, sigs[0][3]).scorer == "learned"
        g.save()
        data = file_bytes(path)
        assert not any(np.asarray(v, "<f4").tobytes() in data for v in inks)  # sealed, never plain
        g.remove(SECRET_WRITER)
    with Gallery(path, pipeline, key=key) as g:
        assert g.verify("other", sigs[1][3]).scorer == "learned"
        conn = g._store.conn
        assert conn.execute("SELECT COUNT(*) FROM sample_ink").fetchone()[0] == 3
