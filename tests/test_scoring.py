import numpy as np
import pytest

from sigedge.evaluate import protocol_scores
from sigedge.scoring import WriterNormalisation, fuse_scores, reference_agreement


def unit(*v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_reference_agreement_is_the_mean_pairwise_cosine():
    refs = np.stack([unit(1, 0), unit(1, 1), unit(0, 1)])
    expected = np.mean([refs[0] @ refs[1], refs[0] @ refs[2], refs[1] @ refs[2]])
    assert reference_agreement(refs) == pytest.approx(expected)
    assert reference_agreement(refs[:1]) is None
    assert reference_agreement(np.stack([unit(1, 0)] * 4)) == pytest.approx(1.0)


def test_writer_normalisation_raises_the_bar_for_consistent_writers():
    norm = WriterNormalisation(strength=0.5, centre=0.8)
    assert norm.apply(0.9, 0.8) == pytest.approx(0.9)  # a typical writer: unchanged
    assert norm.apply(0.9, 1.0) == pytest.approx(0.8)  # references agree closely: must match closer
    assert norm.apply(0.9, 0.6) == pytest.approx(1.0)  # a writer who varies gets leeway
    assert norm.apply(0.9, None) == pytest.approx(0.9)  # one reference: nothing to measure
    assert WriterNormalisation.from_manifest(None) is None and WriterNormalisation.from_manifest({}) is None
    assert WriterNormalisation.from_manifest({"strength": "0.25", "centre": 0.5}) == WriterNormalisation(0.25, 0.5)


def test_protocol_scores_apply_the_normalisation_writer_by_writer():
    rng = np.random.default_rng(0)
    emb, writers, kinds = [], [], []
    for w, spread in (("tight", 0.05), ("loose", 0.6)):
        centre = rng.normal(size=16)
        for _ in range(8):
            v = centre + spread * rng.normal(size=16)
            emb.append(v / np.linalg.norm(v))
            writers.append(w)
            kinds.append("genuine")
    emb = np.array(emb, np.float32)
    plain = protocol_scores(emb, writers, kinds, references=5, seed=3)
    norm = WriterNormalisation(strength=0.5, centre=0.7)
    normed = protocol_scores(emb, writers, kinds, references=5, seed=3, normalisation=norm)
    zero = protocol_scores(emb, writers, kinds, references=5, seed=3, normalisation=WriterNormalisation(0.0, 0.7))
    assert np.allclose(zero.genuine, plain.genuine) and np.allclose(zero.random, plain.random)
    # same draws: each writer's scores move by one constant, -0.5 * (its agreement - 0.7)
    shift = normed.genuine - plain.genuine  # writers in sorted order: "loose" first, then "tight"
    loose, tight = shift[:3], shift[3:]
    assert np.allclose(loose, loose[0]) and np.allclose(tight, tight[0])
    assert tight[0] < loose[0]  # the tight writer's references agree more: its bar rises more


def test_the_packaged_bundle_scores_the_plain_cosine(pipeline):
    assert pipeline.normalisation is None  # measured, not shipped: see the model card


def test_pipeline_verification_applies_the_bundles_normalisation(tmp_path):
    from sigedge import Pipeline
    from sigedge.synth import synthetic_signature
    from tests.helpers import normalised_bundle

    pipeline = Pipeline(normalised_bundle(tmp_path, strength=0.6, centre=0.7))
    norm = pipeline.normalisation
    assert norm == WriterNormalisation(0.6, 0.7)
    refs = [synthetic_signature(3, s) for s in range(4)]
    query = synthetic_signature(3, 9)
    result = pipeline.verify(query, refs)
    ref_emb = pipeline.embed_many(refs)
    sims = ref_emb @ pipeline.embed(query)
    assert result.reference_agreement == pytest.approx(reference_agreement(ref_emb), abs=1e-6)
    assert result.score == pytest.approx(norm.apply(fuse_scores(sims), reference_agreement(ref_emb)), abs=1e-6)
    assert result.genuine == (result.score >= result.threshold) and result.writer_normalised
    single = pipeline.verify(query, refs[:1])  # one reference: nothing to normalise by
    assert single.reference_agreement is None and not single.writer_normalised
    assert single.score == pytest.approx(float(single.similarities[0]), abs=1e-6)


def test_another_fusion_than_the_bundles_is_not_normalised(caplog, tmp_path):
    from sigedge import Pipeline, PipelineOptions
    from tests.helpers import normalised_bundle

    with caplog.at_level("WARNING"):
        pipe = Pipeline(normalised_bundle(tmp_path), PipelineOptions(fusion="max"))
    assert pipe.normalisation is None and "not normalised" in caplog.text


def test_identify_never_takes_a_normalised_verification_threshold(tmp_path):
    """Without an identification block, identify falls back on a verification threshold only
    when verification scores the plain cosine, as identify does."""
    import json

    from sigedge import Gallery, Pipeline
    from sigedge.errors import GalleryError
    from tests.helpers import normalised_bundle

    bundle = normalised_bundle(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert Gallery(tmp_path / "c.gallery", Pipeline(bundle)).identify_threshold == manifest["identification"]["threshold"]
    manifest.pop("identification")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    gallery = Gallery(tmp_path / "a.gallery", Pipeline(bundle))
    with pytest.raises(GalleryError, match="no identification threshold"):
        gallery.identify_threshold
    manifest["verification"].pop("writer_normalisation")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    plain = Gallery(tmp_path / "b.gallery", Pipeline(bundle))
    assert plain.identify_threshold == pytest.approx(manifest["verification"]["thresholds"]["far_random_1pct"])


def test_protocol_scores_take_one_normalisation_per_claimed_writer():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(16, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    writers, kinds = ["a"] * 8 + ["b"] * 8, ["genuine"] * 16
    plain = protocol_scores(emb, writers, kinds, references=5, seed=0)
    only_b = {"a": WriterNormalisation(0.0, 0.0), "b": WriterNormalisation(1.0, 0.0)}
    mixed = protocol_scores(emb, writers, kinds, references=5, seed=0, normalisation=only_b)
    assert np.allclose(mixed.genuine[:3], plain.genuine[:3])  # writer a: strength 0
    assert not np.allclose(mixed.genuine[3:], plain.genuine[3:])  # writer b: normalised
    with pytest.raises(KeyError):  # a writer without one is an error, not a silent mix of scales
        protocol_scores(emb, writers, kinds, references=5, seed=0, normalisation={"a": only_b["a"]})
