import numpy as np
import pytest

from sigedge import Pipeline, PipelineOptions
from sigedge.errors import InvalidImageError, NoSignatureError, UsageError
from sigedge.interpreter import BACKENDS, interpreter_backend
from sigedge.synth import synthetic_signature


def test_embed_is_l2_normalised_float32(pipeline):
    e = pipeline.embed(synthetic_signature(1, 0))
    assert e.dtype == np.float32 and e.shape == (pipeline.dim,)
    assert abs(np.linalg.norm(e) - 1) < 1e-4


def test_embed_many_matches_embed(pipeline):
    imgs = [synthetic_signature(w, 0) for w in range(3)]
    many = pipeline.embed_many(imgs)
    assert many.shape == (3, pipeline.dim)
    assert np.allclose(many[1], pipeline.embed(imgs[1]), atol=1e-6)
    assert pipeline.embed_many([]).shape == (0, pipeline.dim)


def test_verify_result_fields(pipeline):
    refs = [synthetic_signature(2, s) for s in range(3)]
    r = pipeline.verify(synthetic_signature(2, 9), refs)
    assert isinstance(r.score, float) and isinstance(r.threshold, float) and isinstance(r.genuine, bool)
    assert r.genuine == (r.score >= r.threshold)
    assert len(r.similarities) == 3 and 0 <= r.closest_reference < 3
    assert r.model_sha256 == pipeline.model_sha256


def test_identical_image_scores_one(pipeline):
    img = synthetic_signature(4, 0)
    r = pipeline.verify(img, [img])
    assert r.cosine > 0.999 and r.genuine and r.band == "accept"


def test_threshold_override_and_operating_points():
    p = Pipeline(options=PipelineOptions(threshold=0.123))
    assert p.threshold == 0.123 and p.operating_point == "custom"
    p2 = Pipeline(options=PipelineOptions(operating_point="far_skilled_1pct"))
    assert p2.threshold == p2.bundle.verification["thresholds"]["far_skilled_1pct"]
    with pytest.raises(UsageError):
        Pipeline(options=PipelineOptions(operating_point="no-such-point"))


def test_float_reference_model_agrees_with_int8(pipeline):
    pf = Pipeline(options=PipelineOptions(precision="float"))
    imgs = [synthetic_signature(w, 0) for w in range(4)]
    cos = np.sum(pipeline.embed_many(imgs) * pf.embed_many(imgs), axis=1)
    assert cos.min() > 0.9


def test_errors(pipeline):
    with pytest.raises(InvalidImageError):
        pipeline.embed(b"not an image")
    with pytest.raises(NoSignatureError):
        pipeline.embed(np.full((100, 300), 255, np.uint8))
    with pytest.raises(UsageError):
        pipeline.verify(synthetic_signature(1, 0), [])


def test_backend_is_the_preferred_one():
    assert interpreter_backend() in BACKENDS
    assert interpreter_backend() != "tensorflow.lite"  # the runtime must not need TensorFlow


def test_decision_band_accepts_refers_and_rejects(pipeline):
    band = pipeline.bundle.verification["band"]
    accept, reject = float(band["accept"]), float(band["reject"])
    assert reject <= accept
    assert pipeline.band(accept) == "accept" and pipeline.band(accept + 0.05) == "accept"
    assert pipeline.band(reject - 1e-6) == "reject"
    if reject < accept:
        assert pipeline.band((accept + reject) / 2) == "refer"
    result = pipeline.verify(synthetic_signature(0, 0), [synthetic_signature(0, 0)])
    assert result.band == pipeline.band(result.score)


def test_the_packaged_pipeline_measures_the_contour_hinge_its_scorer_weighs(pipeline):
    from sigedge.hinge import HingeSpec, contour_hinge

    assert pipeline.hinge == pipeline.scorer.hinge == HingeSpec()
    img = synthetic_signature(5, 0)
    f = pipeline.describe(img)
    assert f.ink.shape == (pipeline.ink_width,) == (4 + HingeSpec().size,)
    np.testing.assert_allclose(f.ink[4:], contour_hinge(pipeline._cleaned(img), HingeSpec(), pipeline.normalize_options))
    assert pipeline.describe_many([])[1].shape == (0, pipeline.ink_width)
    # the cosine scorer's pipeline still measures it, so that a gallery it enrols serves the bundle's scorer
    assert Pipeline(options=PipelineOptions(scorer="cosine")).describe(img).ink.shape == f.ink.shape
    # references described without the hinge are scored by the cosine
    refs = [synthetic_signature(5, s) for s in range(1, 4)]
    emb, ink = pipeline.describe_many(refs)
    assert pipeline.verify_embeddings(f.embedding, emb, f.ink, ink).scorer == "learned"
    assert pipeline.verify_embeddings(f.embedding, emb, f.ink[:4], ink[:, :4]).scorer == "cosine"
