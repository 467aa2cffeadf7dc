"""Gallery API: enrol / identify / verify / remove, persistence, growth, erasure, model guard."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sigedge.errors import GalleryError, InvalidImageError, NoSignatureError, UsageError
from sigedge.gallery import Gallery, GalleryOptions, Match, reindex_gallery, verify_in_gallery
from tests.hostile import draw_signature
from tests.test_gallery_support import SketchEmbedder, blank_png, signature_png, unit_vectors


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """5 enrolment samples and 2 held-out queries for each of 6 writers, plus unknown writers."""
    d = tmp_path_factory.mktemp("sigs")
    return {
        "enrol": {w: [signature_png(d / f"w{w}_{s}.png", w, s) for s in range(5)] for w in range(6)},
        "query": {w: [signature_png(d / f"q{w}_{s}.png", w, 50 + s) for s in range(2)] for w in range(6)},
        "unknown": [signature_png(d / f"u{w}.png", w, 0) for w in range(100, 104)],
    }


def _enrolled(path: Path, embedder, images, writers=range(6), **kw) -> Gallery:
    g = Gallery(path, embedder, **kw)
    for w in writers:
        g.enroll(f"writer-{w}", images["enrol"][w])
    return g


def file_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def db_dump(folder: Path) -> list[str]:
    conn = sqlite3.connect(folder / "gallery.db")
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


EXACT, HNSW = GalleryOptions(), GalleryOptions(exact_search_limit=0)


@pytest.mark.parametrize("opts", [EXACT, HNSW], ids=["exact", "hnsw"])
def test_round_trip_identify_verify_remove(tmp_path, embedder, images, opts):
    with _enrolled(tmp_path / "g", embedder, images, options=opts) as g:
        assert len(g) == 6 and g.sample_count == 30
        assert [w.writer_id for w in g.writers()] == [f"writer-{w}" for w in range(6)]
        assert all(w.samples == 5 for w in g.writers())
        assert "writer-3" in g and "writer-9" not in g
        for w in range(6):
            for q in images["query"][w]:
                matches = g.identify(q, k=3)
                assert matches and isinstance(matches[0], Match)
                assert matches[0].writer_id == f"writer-{w}", matches
                assert matches[0].accepted and matches[0].known and matches[0].references == 5
                assert matches[0].rank == 1 and matches[0].score >= g.identify_threshold
                assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
                assert g.verify(f"writer-{w}", q).genuine
                assert not g.verify(f"writer-{(w + 1) % 6}", q).genuine
        assert g.remove("writer-2") == 5
        assert "writer-2" not in g and len(g) == 5 and g.sample_count == 25
        assert all(m.writer_id != "writer-2" for m in g.identify(images["query"][2][0], k=5, include_rejected=True))
        with pytest.raises(GalleryError, match="no writer"):
            g.verify("writer-2", images["query"][2][0])
        with pytest.raises(GalleryError, match="no writer"):
            g.remove("writer-2")


def test_identify_ranks_writers_not_samples(tmp_path, embedder, images):
    with _enrolled(tmp_path / "g", embedder, images) as g:
        matches = g.identify(images["query"][0][0], k=6, include_rejected=True)
        ids = [m.writer_id for m in matches]
        assert len(ids) == len(set(ids)) == 6  # each writer once, though each has 5 samples
        top = matches[0]
        refs = g.references(top.writer_id)
        expected = float(np.mean(refs @ embedder.embed(images["query"][0][0])))
        assert top.score == pytest.approx(expected, abs=1e-5)  # the verify score (mean fusion)
        assert top.score == pytest.approx(g.verify(top.writer_id, images["query"][0][0]).score, abs=1e-5)


def test_exact_and_index_search_agree(tmp_path):
    """The index ranks writers by their mean similarity, exactly as brute force does."""
    emb = SketchEmbedder(sha256="vectors")
    rng = np.random.default_rng(5)
    centres = unit_vectors(400, seed=3)
    refs = {}
    with Gallery(tmp_path / "g", emb, options=HNSW) as g:
        for w in range(400):
            v = centres[w] + 0.7 * rng.standard_normal((int(rng.integers(1, 6)), 128)) / np.sqrt(128)
            refs[f"w{w}"] = v / np.linalg.norm(v, axis=1, keepdims=True)
            g._enroll_embeddings(f"w{w}", refs[f"w{w}"])
    queries = unit_vectors(30, seed=4)
    queries[:10] = centres[:10]
    overlap = []
    for opts in (EXACT, HNSW):
        with Gallery(tmp_path / "g", emb, options=opts) as g:
            for q in queries:
                exact = sorted(refs, key=lambda w: -float(np.mean(refs[w] @ q)))[:10]
                got = g._identify_embedding(q, k=10)
                assert [m.rank for m in got] == list(range(1, 11))
                for m in got:
                    assert m.score == pytest.approx(float(np.mean(refs[m.writer_id] @ q)), abs=1e-5)
                    assert m.references == len(refs[m.writer_id])
                overlap.append(len({m.writer_id for m in got} & set(exact)) / 10)
                if opts is EXACT:
                    assert [m.writer_id for m in got] == exact
    assert np.mean(overlap) >= 0.99


def test_max_fusion_rescoring(tmp_path):
    emb = SketchEmbedder(sha256="vectors")
    vecs = unit_vectors(30, seed=6)
    opts = GalleryOptions(identify_fusion="max")
    with Gallery(tmp_path / "g", emb, options=opts) as g:
        for w in range(10):
            g._enroll_embeddings(f"w{w}", vecs[3 * w:3 * w + 3])
        m = g._identify_embedding(vecs[4], k=3)
        assert m[0].writer_id == "w1" and m[0].score == pytest.approx(1.0, abs=1e-5)
        assert all(a.score >= b.score for a, b in zip(m, m[1:]))


def test_open_set_rejects_unknown_signers(tmp_path, embedder, images):
    with _enrolled(tmp_path / "g", embedder, images) as g:
        for u in images["unknown"]:
            assert g.identify(u, k=5) == []
            ranked = g.identify(u, k=5, include_rejected=True)
            assert len(ranked) == 5 and not any(m.accepted for m in ranked)
            assert all(m.score < g.identify_threshold for m in ranked)
    # The threshold comes from the model bundle and an explicit option overrides it.
    opts = GalleryOptions(identify_threshold=-1.0)
    with Gallery(tmp_path / "g", embedder, options=opts) as g:
        assert g.identify_threshold == -1.0
        assert len(g.identify(images["unknown"][0], k=5)) == 5


def test_threshold_defaults_to_the_bundle(tmp_path, images):
    emb = SketchEmbedder()
    emb.bundle.identification.clear()
    emb.bundle.verification["thresholds"]["far_random_1pct"] = 0.42
    with Gallery(tmp_path / "g", emb) as g:
        assert g.identify_threshold == 0.42
    emb.bundle.identification["threshold"] = 0.55
    with Gallery(tmp_path / "g", emb) as g:
        assert g.identify_threshold == 0.55


def test_persists_across_reopen_and_rebuilds_a_lost_index(tmp_path, embedder, images):
    path = tmp_path / "g"
    with _enrolled(path, embedder, images, writers=range(4)):
        pass
    with Gallery(path, embedder, create=False) as g:
        assert g.identify(images["query"][1][0])[0].writer_id == "writer-1"
        g.enroll("writer-4", images["enrol"][4])
    for p in path.glob("index-*"):
        p.unlink()  # the index is a cache: the database alone must do
    with Gallery(path, embedder, create=False) as g:
        assert len(g) == 5 and g.info().index_elements == 5  # one mean vector per writer
        assert g.identify(images["query"][4][0])[0].writer_id == "writer-4"
    assert list(path.glob("index-*.hnsw")), "close() should have saved the rebuilt index"


def test_stale_index_catches_up_from_the_database(tmp_path):
    emb = SketchEmbedder(sha256="vectors")
    path = tmp_path / "g"
    vecs = unit_vectors(40, seed=1)
    with Gallery(path, emb, options=GalleryOptions(index_save_every=1)) as g:
        g._enroll_embeddings("a", vecs[:10])
    (old_index,) = path.glob("index-*.hnsw")
    old_bytes = old_index.read_bytes()
    g = Gallery(path, emb, options=GalleryOptions(index_save_every=10_000))  # saves never due
    for i in range(1, 4):
        g._enroll_embeddings(f"w{i}", vecs[10 * i: 10 * i + 10])
    g.remove("a")
    g._store.close()  # "crash": no close()
    g._closed = True
    # An index file far behind the database: it still holds "a" and lacks w1..w3.
    for p in path.glob("index-*"):
        p.unlink()
    old_index.write_bytes(old_bytes)
    with Gallery(path, emb, options=HNSW) as g2:
        assert {w.writer_id for w in g2.writers()} == {"w1", "w2", "w3"}
        assert g2.info().index_elements - g2.info().index_deleted == 3
        for i in range(1, 4):
            assert g2._identify_embedding(vecs[10 * i], k=1)[0].writer_id == f"w{i}"
        assert all(m.writer_id != "a" for m in g2._identify_embedding(vecs[0], k=3))
    assert not old_index.exists()  # close() replaced the stale file...
    data = file_bytes(path)
    assert not any(c in data for v in vecs[:10] for c in _vector_chunks(v))  # ...without a's vectors


def test_reader_sees_changes_made_by_another_handle(tmp_path, embedder, images):
    path = tmp_path / "g"
    with _enrolled(path, embedder, images, writers=[0]) as writer, Gallery(path, embedder, options=HNSW) as reader:
        assert reader.identify(images["query"][0][0])[0].writer_id == "writer-0"
        writer.enroll("writer-1", images["enrol"][1])
        assert reader.identify(images["query"][1][0])[0].writer_id == "writer-1"
        writer.remove("writer-0")
        assert reader.identify(images["query"][0][0]) == []


def test_index_grows_past_its_initial_capacity(tmp_path):
    emb = SketchEmbedder(sha256="vectors")
    vecs = unit_vectors(300, seed=2)
    with Gallery(tmp_path / "g", emb, options=GalleryOptions(initial_capacity=16, exact_search_limit=0)) as g:
        for i in range(0, 300, 3):
            g._enroll_embeddings(f"w{i // 3}", vecs[i:i + 3])
        assert g._index.get_max_elements() >= 100 > 16
        assert g.info().index_elements == 100 and g.sample_count == 300
    with Gallery(tmp_path / "g", emb, options=HNSW) as g:
        for i in (0, 150, 297):
            m = g._identify_embedding(vecs[i], k=1)[0]
            assert m.writer_id == f"w{i // 3}" and m.references == 3


def test_enrol_is_all_or_nothing(tmp_path, embedder, images):
    path = tmp_path / "g"
    with _enrolled(path, embedder, images, writers=[0]) as g:
        before = gallery_state(path)
        bad = [images["enrol"][1][0], images["enrol"][1][1], blank_png(tmp_path / "blank.png")]
        with pytest.raises(NoSignatureError):
            g.enroll("writer-1", bad)
        with pytest.raises(InvalidImageError, match="missing.png"):
            g.enroll("writer-0", [images["enrol"][0][0], tmp_path / "missing.png"])
        with pytest.raises(InvalidImageError, match="image 2 of 2"):
            g.enroll("writer-0", [draw_signature(0, 1), b"not an image"])
        assert g.sample_count == 5 and "writer-1" not in g
    assert gallery_state(path) == before


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "x" * 257, 42])
def test_writer_id_is_checked(tmp_path, embedder, images, bad):
    with Gallery(tmp_path / "g", embedder) as g:
        with pytest.raises(UsageError):
            g.enroll(bad, images["enrol"][0][:1])
        assert len(g) == 0


def test_enrol_accepts_arrays_bytes_and_a_single_image(tmp_path, embedder, images):
    with Gallery(tmp_path / "g", embedder) as g:
        r = g.enroll("w", draw_signature(3, 0))
        assert r.added == 1 and r.new_writer
        r = g.enroll("w", [images["enrol"][3][1].read_bytes(), str(images["enrol"][3][2])])
        assert r.added == 2 and r.samples == 3 and not r.new_writer
        assert g.identify(images["query"][3][0])[0].writer_id == "w"


def test_real_pipeline_stores_its_embeddings(tmp_path, pipeline, images):
    """With the bundled model (whatever its quality) the stored vectors are its embeddings."""
    with Gallery(tmp_path / "g", pipeline) as g:
        g.enroll("w0", images["enrol"][0][:2])
        refs = g.references("w0")
        expected = np.stack([pipeline.embed(p) for p in images["enrol"][0][:2]])
        norms = np.linalg.norm(expected, axis=1, keepdims=True)
        expected = np.where(norms > 0, expected / np.maximum(norms, 1e-12), expected)
        np.testing.assert_allclose(refs, expected, atol=1e-6)
        res = g.verify("w0", images["query"][0][0])
        q, (_, inks) = pipeline.describe(images["query"][0][0]), pipeline.describe_many(images["enrol"][0][:2])
        direct = pipeline.verify_embeddings(q.embedding, refs, q.ink, inks)
        assert res == direct and res.scorer == "learned"
        info = g.info()
        assert info.model_sha256 == pipeline.model_sha256 and info.dim == pipeline.dim


def gallery_state(folder: Path) -> tuple:
    """What must not change when an operation fails: database content, audit log, index files."""
    index = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("index-")}
    return db_dump(folder), (folder / "audit.jsonl").read_bytes(), index


def _vector_chunks(v: np.ndarray) -> list[bytes]:
    raw = np.asarray(v, "<f4").tobytes()
    return [raw[i:i + 16] for i in range(0, len(raw), 16)]


def test_remove_erases_every_byte(tmp_path, embedder, images):
    path = tmp_path / "g"
    secret = "erase-me-writer-0451"
    g = Gallery(path, embedder, keep_crops=True)
    g.enroll(secret, images["enrol"][0])
    g.enroll("keeper", images["enrol"][1])
    reader = Gallery(path, embedder)  # a second handle holding the vectors in memory
    assert reader.identify(images["query"][0][0])[0].writer_id == secret
    gone, kept = g.references(secret), g.references("keeper")
    g.save()
    gone = np.vstack([gone, _centroid(g, secret)])  # the index holds the writer's mean vector
    crop = images["enrol"][0][0].read_bytes()
    data = file_bytes(path)
    # the search finds them while they are enrolled (in the database and the index)
    assert all(c in data for v in gone for c in _vector_chunks(v))
    assert secret.encode() in data and crop[100:164] in data
    assert g.remove(secret) == 5
    assert reader.identify(images["query"][0][0]) == []
    reader.close()  # saves its (caught-up) index: must not bring the vectors back
    g.close()
    data = file_bytes(path)
    for v in gone:
        for c in _vector_chunks(v):
            assert c not in data
    assert secret.encode() not in data and secret.encode("utf-16-le") not in data
    assert crop[100:164] not in data
    assert all(c in data for v in kept for c in _vector_chunks(v))  # the search can still find things
    assert all(c in data for c in _vector_chunks(_mean(kept)))
    with Gallery(path, embedder) as g:
        assert [w.writer_id for w in g.writers()] == ["keeper"]
        assert g.identify(images["query"][1][0])[0].writer_id == "keeper"
        assert g.check_audit().ok


def _mean(refs: np.ndarray) -> np.ndarray:
    return refs.mean(axis=0, dtype=np.float64).astype(np.float32)


def _centroid(g: Gallery, writer: str) -> np.ndarray:
    """The writer's vector in the index (the mean of its references)."""
    return g._index.get_items([g._writer_rows[writer]], return_type="numpy")[0]


def _meta(path: Path, key: str):
    conn = sqlite3.connect(path / "gallery.db")
    try:
        return conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]
    finally:
        conn.close()


def test_interrupted_erasure_is_finished_by_the_next_open(tmp_path, embedder, images, monkeypatch):
    path = tmp_path / "g"
    g = _enrolled(path, embedder, images, writers=[0, 1])
    g.save()
    centroid = _centroid(g, "writer-0")
    assert all(c in file_bytes(path) for c in _vector_chunks(centroid))

    def crash(self):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Gallery, "_finish_erasure_locked", crash)
    with pytest.raises(KeyboardInterrupt):
        g.remove("writer-0")  # committed, then "killed" before the index and WAL are cleaned
    monkeypatch.undo()
    g._store.close()
    g._closed = True
    assert _meta(path, "erase_pending") == 1
    assert any(c in file_bytes(path) for c in _vector_chunks(centroid))  # the old index file: not yet erased
    with Gallery(path, embedder) as g2:
        assert "writer-0" not in g2 and g2.identify(images["query"][0][0]) == []
    assert _meta(path, "erase_pending") == 0
    assert not any(c in file_bytes(path) for c in _vector_chunks(centroid))


def test_model_guard_and_reindex(tmp_path, images):
    old, new = SketchEmbedder(sha256="model-A", seed=7), SketchEmbedder(sha256="model-B", seed=8)
    kept, lost = tmp_path / "kept", tmp_path / "lost"
    _enrolled(kept, old, images, writers=range(3), keep_crops=True).close()
    _enrolled(lost, old, images, writers=range(3)).close()
    for path in (kept, lost):
        with pytest.raises(GalleryError, match="sigedge reindex"):
            Gallery(path, new)
    with pytest.raises(GalleryError, match="--keep-crops"):
        reindex_gallery(lost, new)
    with pytest.raises(GalleryError, match="sigedge reindex"):
        Gallery(lost, new)  # unchanged by the refused reindex
    result = reindex_gallery(kept, new)
    assert result.changed and result.samples == 15 and result.model_sha256 == "model-B"
    with pytest.raises(GalleryError, match="sigedge reindex"):
        Gallery(kept, old)
    with Gallery(kept, new) as g:
        for w in range(3):
            assert g.identify(images["query"][w][0])[0].writer_id == f"writer-{w}"
            np.testing.assert_allclose(g.references(f"writer-{w}")[0], new.embed(images["enrol"][w][0]), atol=1e-6)
        assert g.check_audit().ok
    assert not reindex_gallery(kept, new).changed


def test_not_a_gallery_and_closed(tmp_path, embedder, images):
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery(tmp_path / "nothing", embedder, create=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.txt").write_text("mine")
    with pytest.raises(GalleryError, match="not empty"):
        Gallery(tmp_path / "busy", embedder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="not a directory"):
        Gallery(tmp_path / "file", embedder)
    g = Gallery(tmp_path / "g", embedder)
    g.close()
    g.close()
    with pytest.raises(GalleryError, match="closed"):
        g.identify(images["query"][0][0])


def test_verify_in_gallery(tmp_path, embedder, images):
    _enrolled(tmp_path / "g", embedder, images, writers=[0, 1]).close()
    r = verify_in_gallery(tmp_path / "g", "writer-1", images["query"][1][0], pipeline=embedder)
    assert r.genuine and len(r.similarities) == 5
    assert not verify_in_gallery(tmp_path / "g", "writer-0", images["query"][1][0], pipeline=embedder).genuine
    with pytest.raises(GalleryError):
        verify_in_gallery(tmp_path / "none", "writer-0", images["query"][1][0], pipeline=embedder)
    assert not (tmp_path / "none").exists()


def test_no_side_effects_and_no_tensorflow_on_import():
    import subprocess
    import sys

    code = ("import sys, sigedge.gallery, sigedge.gallery_cli, sigedge.audit, sigedge.crypto; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'cryptography', 'keras')]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ ink statistics (learned scorer)

def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path / "gallery.db")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _drop_ink_table(path: Path) -> None:
    """Make a gallery look like one made before galleries kept ink statistics."""
    _sql(path, "DROP TABLE sample_ink")


def test_gallery_keeps_ink_statistics_for_the_learned_scorer(tmp_path, pipeline, images):
    with Gallery(tmp_path / "g", pipeline) as g:
        g.enroll("w0", images["enrol"][0][:3])
        refs, inks, _ = g._writer_samples("w0")
        np.testing.assert_allclose(inks, pipeline.describe_many(images["enrol"][0][:3])[1], atol=1e-6)
        assert g.verify("w0", images["query"][0][0]).scorer == "learned"


def test_a_gallery_made_before_ink_statistics_verifies_by_the_cosine(tmp_path, pipeline, images):
    path = tmp_path / "old"
    with Gallery(path, pipeline) as g:
        g._enroll_embeddings("old", pipeline.embed_many(images["enrol"][0][:3]))  # as an older sigedge did
    _drop_ink_table(path)
    with Gallery(path, pipeline) as g:
        old = g.verify("old", images["query"][0][0])
        assert old.scorer == "cosine" and old.threshold == pipeline.verify_embeddings(
            pipeline.embed(images["query"][0][0]), g.references("old")).threshold
        g.enroll("new", images["enrol"][1][:3])  # the table comes back with the first new sample
        assert g.verify("new", images["query"][1][0]).scorer == "learned"
        g.enroll("old", images["enrol"][0][3:4])  # some references without statistics: the cosine
        assert g.verify("old", images["query"][0][0]).scorer == "cosine"


def test_reindex_measures_the_ink_statistics_of_kept_crops(tmp_path, pipeline, images):
    path = tmp_path / "old"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("w", images["enrol"][2][:3])
    _drop_ink_table(path)
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"
    assert reindex_gallery(path, pipeline).changed  # same model, but samples without statistics
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "learned"
    assert not reindex_gallery(path, pipeline).changed  # now up to date


def test_references_measured_before_the_contour_hinge_verify_by_the_cosine_until_reindexed(
        tmp_path, pipeline, images, caplog):
    """The packaged scorer weighs the contour hinge; a gallery enrolled by a sigedge whose
    scorer did not kept the four ink statistics alone."""
    assert pipeline.hinge is not None and pipeline.ink_width == 4 + pipeline.hinge.size
    path = tmp_path / "before-hinge"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("w", images["enrol"][2][:3])
        assert g._writer_samples("w")[1].shape == (3, pipeline.ink_width)
    _sql(path, "UPDATE sample_ink SET data = substr(data, 1, 16)")  # the ink statistics alone
    with Gallery(path, pipeline) as g:
        assert g._writer_samples("w")[1].shape == (3, 4)
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"
    assert "measured otherwise" in caplog.text
    result = reindex_gallery(path, pipeline)
    assert result.changed and result.ink_measured == 3
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "learned"
    assert not reindex_gallery(path, pipeline).changed


def test_references_measured_with_another_contour_hinge_verify_by_the_cosine_until_reindexed(
        tmp_path, pipeline, images, caplog):
    """Two hinge settings can give ink vectors of one length; the gallery records how its
    references were measured and compares only their ink statistics when it differs."""
    path = tmp_path / "other-hinge"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("w", images["enrol"][2][:3])
        g.enroll("kept-none", images["enrol"][3][:3])
    assert _meta(path, "ink_layout") == pipeline.ink_layout == "statistics+hinge:skeleton,200,4-8,12"
    other = "statistics+hinge:ink,200,4-8,12"  # same length, other histograms
    _sql(path, f"UPDATE meta SET value='{other}' WHERE key='ink_layout'",
         "DELETE FROM crops WHERE sample_id IN (SELECT s.id FROM samples s JOIN writers w ON w.id = s.writer "
         "WHERE w.lookup = 'kept-none')")
    with Gallery(path, pipeline) as g:
        assert g._writer_samples("w")[1].shape == (3, 4)
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"
        with pytest.raises(GalleryError, match="measured as 'statistics\\+hinge:ink"):
            g.enroll("new", images["enrol"][1][:3])
        with pytest.raises(GalleryError, match="no writer"):  # nothing of the refused writer was stored
            g.references("new")
    assert "measured otherwise" in caplog.text
    result = reindex_gallery(path, pipeline)
    assert result.changed and (result.ink_measured, result.ink_missing) == (3, 3)
    assert _meta(path, "ink_layout") == pipeline.ink_layout
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "learned"
        # what could not be measured again keeps its ink statistics alone, not the other histograms
        assert g._writer_samples("kept-none")[1].shape == (3, 4)
        assert g.verify("kept-none", images["query"][3][0]).scorer == "cosine"
        g.enroll("new", images["enrol"][1][:3])
        assert g.verify("new", images["query"][1][0]).scorer == "learned"
    reindexed = [json.loads(line) for line in (path / "audit.jsonl").read_text().splitlines()
                 if '"reindex"' in line]
    assert [(e["samples"], e["ink_statistics_only"]) for e in reindexed] == [(3, 3)]


def test_a_stale_gallery_without_kept_images_is_reindexed_to_its_ink_statistics(tmp_path, pipeline, images):
    path = tmp_path / "stale-no-images"
    with Gallery(path, pipeline) as g:
        g.enroll("w", images["enrol"][2][:3])
    _sql(path, "UPDATE meta SET value='statistics+hinge:ink,200,4-8,12' WHERE key='ink_layout'")
    result = reindex_gallery(path, pipeline)
    assert result.changed and (result.ink_measured, result.ink_missing) == (0, 3)
    assert _meta(path, "ink_layout") == pipeline.ink_layout
    with Gallery(path, pipeline) as g:
        assert g._writer_samples("w")[1].shape == (3, 4)
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"
        g.enroll("w2", images["enrol"][1][:3])  # no longer refused
    assert not reindex_gallery(path, pipeline).changed


def test_ink_layouts_are_compatible_when_the_same_or_one_extends_the_other():
    from sigedge.gallery import ink_layouts_compatible

    hinge = "statistics+hinge:skeleton,200,4-8,12"
    assert ink_layouts_compatible(hinge, hinge) and ink_layouts_compatible("", hinge)
    assert ink_layouts_compatible("statistics", hinge) and ink_layouts_compatible(hinge + "+strips:2,0.6", hinge)
    assert not ink_layouts_compatible("statistics+hinge:ink,200,4-8,12", hinge)
    assert not ink_layouts_compatible("statistics+hinge:skeleton,200,4-8,16", hinge)


def test_a_layout_that_extends_the_recorded_one_is_compatible(tmp_path, pipeline, images):
    """A gallery whose bundle measured the ink statistics alone takes references with the hinge
    beside them: its shorter vectors are what the length checks handle."""
    path = tmp_path / "statistics-only"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("w", images["enrol"][2][:3])
    _sql(path, "UPDATE meta SET value='statistics' WHERE key='ink_layout'",
         "UPDATE sample_ink SET data = substr(data, 1, 16)")
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"  # no hinge stored yet
        g.enroll("new", images["enrol"][1][:3])
        assert g.verify("new", images["query"][1][0]).scorer == "learned"
    assert _meta(path, "ink_layout") == pipeline.ink_layout
    assert reindex_gallery(path, pipeline).ink_measured == 3


def test_re_embedding_a_sample_drops_its_ink_statistics(tmp_path, pipeline, images):
    """A sigedge from before the ink statistics re-embeds a gallery by rewriting the vectors
    and knows nothing of the statistics: the database's trigger drops them, rather than
    leaving statistics of the old preprocessing beside the new vectors."""
    path = tmp_path / "g"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("w", images["enrol"][2][:3])
        g.enroll("kept", images["enrol"][3][:2])
        assert g.verify("w", images["query"][2][0]).scorer == "learned"
    _sql(path, "UPDATE samples SET vector = vector WHERE writer = (SELECT MIN(writer) FROM samples)")
    with Gallery(path, pipeline) as g:
        assert g._writer_samples("w")[1] is None and g.verify("w", images["query"][2][0]).scorer == "cosine"
        assert g.verify("kept", images["query"][3][0]).scorer == "learned"  # its statistics stay
    assert reindex_gallery(path, pipeline).changed  # measured again from the kept crops
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "learned"


def test_a_gallery_without_the_trigger_gains_it(tmp_path, pipeline, images):
    path = tmp_path / "g"
    with Gallery(path, pipeline) as g:
        g.enroll("w", images["enrol"][2][:2])
    _sql(path, "DROP TRIGGER sample_ink_follows_vector")  # as the first galleries with ink statistics
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "learned"  # their statistics are kept
        g.enroll("v", images["enrol"][3][:2])
    _sql(path, "UPDATE samples SET vector = vector")
    with Gallery(path, pipeline) as g:
        assert g.verify("w", images["query"][2][0]).scorer == "cosine"


def test_remove_erases_the_ink_statistics(tmp_path, pipeline, images):
    path = tmp_path / "g"
    with Gallery(path, pipeline) as g:
        g.enroll("gone", images["enrol"][3][:2])
        g.enroll("kept", images["enrol"][4][:2])
        gone = g._writer_samples("gone")[1]
        g.save()
        assert all(np.asarray(v, "<f4").tobytes() in file_bytes(path) for v in gone)
        g.remove("gone")
    data = file_bytes(path)
    assert not any(np.asarray(v, "<f4").tobytes() in data for v in gone)
    conn = sqlite3.connect(path / "gallery.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM sample_ink").fetchone()[0] == 2
        # an older sigedge, which knows nothing of the table, deletes samples directly: the
        # statistics go with them (ON DELETE CASCADE), and the foreign key does not stop it
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM samples")
        conn.commit()
        assert conn.execute("SELECT COUNT(*) FROM sample_ink").fetchone()[0] == 0
    finally:
        conn.close()


def test_remove_from_a_gallery_made_before_ink_statistics(tmp_path, pipeline, images):
    path = tmp_path / "old"
    with Gallery(path, pipeline) as g:
        g._enroll_embeddings("gone", pipeline.embed_many(images["enrol"][5][:2]))
        g._enroll_embeddings("kept", pipeline.embed_many(images["enrol"][0][:2]))
    _drop_ink_table(path)
    with Gallery(path, pipeline) as g:
        assert g.remove("gone") == 2
        assert [w.writer_id for w in g.writers()] == ["kept"]


def test_reindex_with_the_same_model_measures_ink_only_where_images_were_kept(tmp_path, pipeline, images):
    """Not an error, and the vectors stay as they are: samples without a kept image stay on the
    cosine until re-enrolled (said in the result)."""
    path = tmp_path / "mixed"
    with Gallery(path, pipeline, keep_crops=True) as g:
        g.enroll("kept", images["enrol"][2][:2])
    with Gallery(path, pipeline) as g:  # a second session that keeps no images
        g._enroll_embeddings("bare", pipeline.embed_many(images["enrol"][3][:2]))
        vectors = g.references("kept")
    _drop_ink_table(path)
    result = reindex_gallery(path, pipeline)
    assert result.changed and (result.ink_measured, result.ink_missing) == (2, 2)
    with Gallery(path, pipeline) as g:
        np.testing.assert_array_equal(g.references("kept"), vectors)
        assert g.verify("kept", images["query"][2][0]).scorer == "learned"
        assert g.verify("bare", images["query"][3][0]).scorer == "cosine"
        assert g.check_audit().ok
    again = reindex_gallery(path, pipeline)  # nothing more it can measure
    assert (again.ink_measured, again.ink_missing) == (0, 2) and not again.changed


def test_verify_audit_events_say_which_scorer_scored(tmp_path, pipeline, images):
    import json

    path = tmp_path / "g"
    with Gallery(path, pipeline, options=GalleryOptions(audit_reads=True)) as g:
        g.enroll("w", images["enrol"][0][:3])
        g.verify("w", images["query"][0][0])
    events = [json.loads(line) for line in (path / "audit.jsonl").read_text().splitlines()]
    assert [e["scorer"] for e in events if e["event"] == "verify"] == ["learned"]


def test_an_embedder_with_ink_but_no_rotations_still_scores_with_ink(tmp_path, pipeline, images):
    """A wrapper that offers describe() but not describe_query(): enrolment keeps the ink
    statistics, and verification uses them."""

    class DescribeOnly:
        model_sha256, dim, bundle = pipeline.model_sha256, pipeline.dim, pipeline.bundle
        embed, describe, verify_embeddings = pipeline.embed, pipeline.describe, pipeline.verify_embeddings

    with Gallery(tmp_path / "g", DescribeOnly()) as g:
        g.enroll("w", images["enrol"][1][:3])
        result = g.verify("w", images["query"][1][0])
    direct = pipeline.verify(images["query"][1][0], images["enrol"][1][:3])
    assert result.scorer == "learned" and result.score == pytest.approx(direct.score, abs=1e-6)


def test_gallery_records_how_references_were_cleaned(tmp_path, pipeline, images, caplog):
    """Enrolled with the learned cleaner, queried with the classic rules: said (a warning, the
    vectors are still comparable), shown by info, and put right by reindex without --force."""
    import logging

    from sigedge import Pipeline, PipelineOptions
    from sigedge.clean import CleanOptions

    learned = Pipeline(options=PipelineOptions(clean_options=CleanOptions(method="learned")))
    assert pipeline.cleaning == "classic" and learned.cleaning.startswith("learned:")
    assert Pipeline(options=PipelineOptions(clean=False)).cleaning == "none"
    path = tmp_path / "g"
    with Gallery(path, learned, keep_crops=True) as g:
        g.enroll("w0", images["enrol"][0][:3])
        assert g.info().cleaning == learned.cleaning
    with caplog.at_level(logging.WARNING, logger="sigedge.gallery"):
        with Gallery(path, pipeline) as g:
            assert g.info().cleaning == learned.cleaning
            assert not caplog.records  # opening, reading the info: nothing to warn about yet
            g.verify("w0", images["query"][0][0])
            g.identify(images["query"][0][0])
    warnings = [r for r in caplog.records if "cleaned" in r.getMessage()]
    assert len(warnings) == 1 and "classic" in warnings[0].getMessage()  # once, at the first query
    result = reindex_gallery(path, pipeline)  # same model, other cleaning: re-embedded
    assert result.changed and (result.previous_cleaning, result.cleaning) == (learned.cleaning, "classic")
    with Gallery(path, pipeline) as g:
        assert g.info().cleaning == "classic"
        expected = pipeline.embed_many(images["enrol"][0][:3])
        np.testing.assert_allclose(g.references("w0"), expected / np.linalg.norm(expected, axis=1, keepdims=True),
                                   atol=1e-6)
        assert g.check_audit().ok
    assert not reindex_gallery(path, pipeline).changed


def test_a_gallery_keeps_one_cleaning(tmp_path, pipeline, images):
    """Gallery(path) without a pipeline cleans as the gallery recorded; enrolling references
    cleaned otherwise is refused while it has references, and taken once it is empty."""
    from sigedge import Pipeline, PipelineOptions
    from sigedge.clean import CleanOptions
    from sigedge.gallery import pipeline_for_gallery, recorded_cleaning

    learned = Pipeline(options=PipelineOptions(clean_options=CleanOptions(method="learned")))
    path = tmp_path / "g"
    assert recorded_cleaning(path) == "" and pipeline_for_gallery(path).cleaning == "classic"
    with Gallery(path, learned) as g:
        g.enroll("w0", images["enrol"][0][:2])
    assert recorded_cleaning(path) == learned.cleaning
    with Gallery(path) as g:
        assert g.pipeline.cleaning == learned.cleaning
        g.enroll("w1", images["enrol"][1][:2])
    with Gallery(path, pipeline) as g:
        with pytest.raises(GalleryError, match="cleaned"):
            g.enroll("w2", images["enrol"][2][:2])
        assert len(g) == 2
        g.remove("w0")
        g.remove("w1")
        g.enroll("w2", images["enrol"][2][:2])  # empty: the gallery takes the new cleaning
    assert recorded_cleaning(path) == "classic"


def test_a_gallery_from_before_the_record_counts_as_classic(tmp_path, pipeline, images):
    """A gallery whose meta has no cleaning (made before galleries recorded it, when the CLI
    only cleaned classically) refuses learned references and records classic on the next enrolment."""
    from sigedge import Pipeline, PipelineOptions
    from sigedge.clean import CleanOptions
    from sigedge.gallery import recorded_cleaning

    path = tmp_path / "g"
    with Gallery(path, pipeline) as g:
        g.enroll("w0", images["enrol"][0][:2])
    with sqlite3.connect(path / "gallery.db") as conn:
        conn.execute("DELETE FROM meta WHERE key='cleaning'")
    assert recorded_cleaning(path) == ""
    learned = Pipeline(options=PipelineOptions(clean_options=CleanOptions(method="learned")))
    with Gallery(path, learned) as g:
        with pytest.raises(GalleryError, match="cleaned 'classic'"):
            g.enroll("w1", images["enrol"][1][:2])
    with Gallery(path, pipeline) as g:
        g.enroll("w1", images["enrol"][1][:2])
    assert recorded_cleaning(path) == "classic"


@pytest.mark.parametrize("cleaning", ["", "classic", "none", "learned:0123456789ab:0.1", "learned:0123456789ab:0"])
def test_pipeline_options_reproduce_a_recorded_cleaning(cleaning):
    from sigedge import PipelineOptions

    opts = PipelineOptions().with_cleaning(cleaning)
    assert opts.clean == (cleaning != "none")
    assert opts.clean_options.method == ("learned" if cleaning.startswith("learned") else "classic")
    if cleaning.startswith("learned"):
        assert opts.clean_options.min_removed_share == float(cleaning.rsplit(":", 1)[1])


@pytest.mark.parametrize("cleaning", ["learned", "learned:abc", "learned:abc:2", "learned:abc:x", "fancy"])
def test_pipeline_options_refuse_an_unknown_cleaning(cleaning):
    from sigedge import PipelineOptions

    with pytest.raises(ValueError, match="recorded cleaning"):
        PipelineOptions().with_cleaning(cleaning)
