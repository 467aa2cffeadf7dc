import json

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


def test_the_packaged_bundle_has_no_writer_normalisation(pipeline):
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


# ---------------------------------------------------------------------- the learned scorer

def _canvas(draw) -> np.ndarray:
    import cv2

    c = np.zeros((128, 256), np.uint8)
    draw(c, cv2)
    return (c > 0).astype(np.float32)


def test_ink_statistics_measure_shape_stroke_and_pen_lifts():
    from sigedge.scoring import INK_STATISTICS, ink_statistics

    wide = ink_statistics(_canvas(lambda c, cv2: cv2.line(c, (10, 60), (240, 70), 255, 2)))
    tall = ink_statistics(_canvas(lambda c, cv2: cv2.line(c, (120, 5), (130, 120), 255, 2)))
    thick = ink_statistics(_canvas(lambda c, cv2: cv2.line(c, (10, 60), (240, 70), 255, 8)))
    lifts = ink_statistics(_canvas(lambda c, cv2: [cv2.line(c, (10 + 40 * i, 60), (40 + 40 * i, 70), 255, 2)
                                                  for i in range(5)]))
    i = {n: k for k, n in enumerate(INK_STATISTICS)}
    assert wide.dtype == np.float32 and wide.shape == (len(INK_STATISTICS),)
    assert wide[i["log_aspect"]] > 2 and tall[i["log_aspect"]] < -1  # log(width / height)
    assert thick[i["log_stroke_width"]] > wide[i["log_stroke_width"]] + 0.5
    assert thick[i["log_ink_fraction"]] > wide[i["log_ink_fraction"]]
    assert lifts[i["log_components"]] == pytest.approx(np.log(6))  # five strokes and the paper
    from sigedge.errors import NoSignatureError

    with pytest.raises(NoSignatureError):  # a SigedgeError: one line and an exit code, never a traceback
        ink_statistics(np.zeros((128, 256), np.float32))


def _scorer(statistics=("log_aspect",)):
    from sigedge.scoring import LearnedScorer

    n = 1 + len(statistics)
    coef = (8.0,) + (-1.0,) * (n - 1) + (4.0,) + (-0.5,) * (n - 1)
    return LearnedScorer(coef=coef, intercept=-5.0, own_default=(0.9,) + (0.1,) * (n - 1), statistics=statistics)


def test_learned_scorer_rises_with_the_cosine_and_falls_with_the_ink_distance():
    rng = np.random.default_rng(0)
    refs = np.stack([unit(*rng.normal(size=8)) for _ in range(4)]).astype(np.float32)
    ref_ink = np.zeros((4, 4), np.float32)
    scorer = _scorer()
    close, far = refs.mean(0) / np.linalg.norm(refs.mean(0)), unit(*rng.normal(size=8))
    ink = np.zeros(4, np.float32)
    assert scorer.score(close, ink, refs, ref_ink) > scorer.score(far, ink, refs, ref_ink)
    wider = ink.copy()
    wider[0] = 1.0  # another aspect ratio: the scorer's statistic
    assert scorer.score(close, wider, refs, ref_ink) < scorer.score(close, ink, refs, ref_ink)
    other = ink.copy()
    other[3] = 1.0  # a statistic this scorer does not use
    assert scorer.score(close, other, refs, ref_ink) == pytest.approx(scorer.score(close, ink, refs, ref_ink))
    many = scorer.score_many(np.stack([close, far]), np.stack([ink, wider]), refs, ref_ink)
    assert many[0] == pytest.approx(scorer.score(close, ink, refs, ref_ink))
    assert many[1] == pytest.approx(scorer.score(far, wider, refs, ref_ink))
    assert all(0.0 <= s <= 1.0 for s in many)


def test_learned_scorer_with_one_reference_takes_the_fitted_default():
    from sigedge.scoring import scorer_features

    scorer = _scorer()
    ref, ink = unit(1, 0, 0)[None].astype(np.float32), np.zeros((1, 4), np.float32)
    x = scorer_features(ref, ink[:, :1], ref, ink[:, :1], np.array(scorer.own_default))
    assert x[0].tolist() == pytest.approx([1.0, 0.0, 1.0 - 0.9, 0.0 - 0.1])
    assert 0.0 < scorer.score(ref[0], ink[0], ref, ink) < 1.0
    with pytest.raises(ValueError, match="default"):
        scorer_features(ref, ink, ref, ink)


def test_learned_scorer_from_manifest_checks_its_contract():
    from sigedge.errors import ModelError
    from sigedge.scoring import LearnedScorer

    s = _scorer()
    block = {"coef": list(s.coef), "intercept": s.intercept, "own_default": list(s.own_default),
             "ink_statistics": ["log_aspect"]}
    assert LearnedScorer.from_manifest(block) == s and LearnedScorer.from_manifest(None) is None
    with pytest.raises(ModelError, match="does not measure"):
        LearnedScorer.from_manifest({**block, "ink_statistics": ["log_pressure"]})
    with pytest.raises(ModelError, match="needs 4 weights"):
        LearnedScorer.from_manifest({**block, "coef": [1.0, 2.0]})
    with pytest.raises(ModelError, match="malformed"):
        LearnedScorer.from_manifest({"coef": [1.0]})
    with pytest.raises(ModelError, match="knows 'logistic'"):
        LearnedScorer.from_manifest({**block, "kind": "mlp"})


def test_protocol_scores_with_a_scorer_keep_the_draws_of_the_cosine():
    """The same references are drawn whichever scorer scores: the EERs compare like with like."""
    rng = np.random.default_rng(3)
    emb = np.stack([unit(*rng.normal(size=8)) for _ in range(24)]).astype(np.float32)
    ink = rng.normal(size=(24, 4)).astype(np.float32)
    writers = [f"w{i // 8}" for i in range(24)]
    kinds = ["genuine"] * 6 + ["forgery"] * 2
    kinds = kinds * 3
    cos = protocol_scores(emb, writers, kinds, references=3, seed=1)
    learned = protocol_scores(emb, writers, kinds, references=3, seed=1, scorer=_scorer(), ink=ink)
    assert [len(a) for a in (cos.genuine, cos.skilled, cos.random)] == \
        [len(a) for a in (learned.genuine, learned.skilled, learned.random)]
    assert np.all((learned.genuine >= 0) & (learned.genuine <= 1))
    with pytest.raises(ValueError, match="ink"):
        protocol_scores(emb, writers, kinds, references=3, scorer=_scorer())


def test_pipeline_scores_with_the_bundles_learned_scorer(pipeline):
    from sigedge import Pipeline, PipelineOptions
    from sigedge.synth import synthetic_signature

    ver = pipeline.bundle.verification
    assert pipeline.scorer is not None and pipeline.normalisation is None
    refs = [synthetic_signature(4, s) for s in range(3)]
    r = pipeline.verify(synthetic_signature(4, 9), refs)
    assert r.scorer == "learned" and 0.0 <= r.score <= 1.0
    assert r.threshold == ver["thresholds"][ver["default_threshold"]] and r.genuine == (r.score >= r.threshold)
    assert r.cosine == pytest.approx(np.mean(r.similarities), abs=1e-6)
    # the same on precomputed features; and without ink statistics, the cosine on its own thresholds
    q, (emb, ink) = pipeline.describe(synthetic_signature(4, 9)), pipeline.describe_many(refs)
    assert pipeline.verify_features(pipeline.describe_query(synthetic_signature(4, 9)), emb, ink) == r
    upright = pipeline.verify_embeddings(q.embedding, emb, q.ink, ink)
    assert upright.scorer == "learned" and upright.score <= r.score  # the best angle counts, upright among them
    plain = pipeline.verify_embeddings(q.embedding, emb)
    assert plain.scorer == "cosine" and plain.score == pytest.approx(upright.cosine)
    assert plain.threshold == ver["cosine"]["thresholds"][ver["cosine"]["default_threshold"]]
    cosine_pipe = Pipeline(options=PipelineOptions(scorer="cosine"))
    cosine = cosine_pipe.verify(synthetic_signature(4, 9), refs)
    assert cosine.scorer == "cosine" and cosine.threshold == plain.threshold and cosine.score >= plain.score
    assert cosine == cosine_pipe.verify_features(cosine_pipe.describe_query(synthetic_signature(4, 9)), emb)
    # a custom threshold is on the learned scale: never silently applied to a cosine
    custom = Pipeline(options=PipelineOptions(threshold=0.5))
    assert custom.verify_embeddings(q.embedding, emb, q.ink, ink).threshold == 0.5
    from sigedge.errors import UsageError

    with pytest.raises(UsageError, match="learned scorer's scale"):
        custom.verify_embeddings(q.embedding, emb)
    with pytest.raises(UsageError, match="or neither"):
        pipeline.verify_embeddings(q.embedding, emb, q.ink)
    with pytest.raises(UsageError, match="expected"):
        pipeline.verify_embeddings(q.embedding, emb, q.ink, ink[:2])
    # the thresholds of each scale, for pictures and reports
    assert pipeline.threshold_for("cosine") == (plain.threshold, plain.operating_point)
    assert pipeline.calibrated_thresholds("learned") == ver["thresholds"]
    assert pipeline.calibrated_thresholds("cosine") == ver["cosine"]["thresholds"]


def test_another_fusion_drops_the_learned_scorer(caplog):
    from sigedge import Pipeline, PipelineOptions

    with caplog.at_level("WARNING"):
        pipe = Pipeline(options=PipelineOptions(fusion="max"))
    assert pipe.scorer is None and "nor learned" in caplog.text


def test_a_bundle_with_both_a_scorer_and_a_normalisation_is_refused(tmp_path):
    import json
    import shutil

    from sigedge import Pipeline
    from sigedge.bundle import default_bundle_dir
    from sigedge.errors import ModelError

    bundle = tmp_path / "both"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["verification"]["writer_normalisation"] = {"strength": 0.5, "centre": 0.9}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="one of them"):
        Pipeline(bundle)


# ---------------------------------------------------------------------- query rotations

def test_rotate_image_keeps_all_of_the_image_on_white():
    from sigedge.normalize import rotate_image

    img = np.full((40, 100), 255, np.uint8)
    img[18:22, 5:95] = 0  # a horizontal stroke
    quarter = rotate_image(img, 90)
    assert quarter.shape == (100, 40) and (quarter == 0).sum() == (img == 0).sum()  # nothing cut off
    tilted = rotate_image(img, 10)
    assert tilted.shape[0] > 40 and tilted[0, 0] == 255 and tilted[-1, -1] == 255  # new corners are paper


def test_protocol_scores_keep_each_querys_best_variant():
    rng = np.random.default_rng(5)
    emb = np.stack([unit(*rng.normal(size=8)) for _ in range(24)]).astype(np.float32)
    other = np.stack([unit(*rng.normal(size=8)) for _ in range(24)]).astype(np.float32)
    writers = [f"w{i // 8}" for i in range(24)]
    kinds = (["genuine"] * 6 + ["forgery"] * 2) * 3
    one = protocol_scores(emb, writers, kinds, references=3, seed=2)
    two = protocol_scores(emb, writers, kinds, references=3, seed=2, query_embeddings=other)
    best = protocol_scores(emb, writers, kinds, references=3, seed=2, query_variants=[(emb, None), (other, None)])
    for part in ("genuine", "skilled", "random"):
        np.testing.assert_allclose(getattr(best, part), np.maximum(getattr(one, part), getattr(two, part)))
    # with the learned scorer each variant is scored with its own ink statistics
    ink, other_ink = rng.normal(size=(24, 4)).astype(np.float32), rng.normal(size=(24, 4)).astype(np.float32)
    kw = dict(references=3, seed=2, scorer=_scorer(), ink=ink)
    one = protocol_scores(emb, writers, kinds, **kw)
    two = protocol_scores(emb, writers, kinds, query_embeddings=other, query_ink=other_ink, **kw)
    best = protocol_scores(emb, writers, kinds, query_variants=[(emb, ink), (other, other_ink)], **kw)
    for part in ("genuine", "skilled", "random"):
        np.testing.assert_allclose(getattr(best, part), np.maximum(getattr(one, part), getattr(two, part)))


def test_pipeline_query_rotations_score_the_best_angle(pipeline, caplog):
    from sigedge import Pipeline, PipelineOptions
    from sigedge.errors import UsageError
    from sigedge.normalize import rotate_image
    from sigedge.synth import synthetic_signature

    turning = pipeline
    assert turning.query_rotations == (-10.0, 0.0, 10.0)  # the packaged bundle is calibrated with the search
    refs = [synthetic_signature(6, s) for s in range(3)]
    query = rotate_image(synthetic_signature(6, 7)[..., 0], -10)  # written at a slant
    with caplog.at_level("WARNING"):
        upright = Pipeline(options=PipelineOptions(query_rotations=(0.0,)))
    assert "not the ones the bundle's thresholds were calibrated with" in caplog.text
    described = turning.describe_query(query)
    assert len(described) == 3
    np.testing.assert_array_equal(described[1].embedding, turning.describe(query).embedding)  # 0 is upright
    emb, ink = turning.describe_many(refs)
    per_angle = [turning.verify_embeddings(d.embedding, emb, d.ink, ink).score for d in described]
    best = turning.verify(query, refs)
    assert best.score == pytest.approx(max(per_angle))
    assert best.query_rotation == (-10.0, 0.0, 10.0)[int(np.argmax(per_angle))]
    assert upright.verify(query, refs).score == pytest.approx(per_angle[1])  # the upright pipeline's score
    assert turning.verify_features(described, emb, ink) == best
    np.testing.assert_array_equal(turning.query_canvas(query, 0.0), turning.prepare(query).canvas)
    assert not np.array_equal(turning.query_canvas(query, 10.0), turning.prepare(query).canvas)
    # a tie keeps the upright reading
    same = [described[1]] * 3
    assert turning.verify_features(same, emb, ink).query_rotation == 0.0
    with pytest.raises(UsageError, match="rotations"):
        turning.verify_features(described[:1], emb, ink)
    with pytest.raises(UsageError, match="must include 0"):
        Pipeline(options=PipelineOptions(query_rotations=(-5.0, 5.0)))


def _background(dim=8, seed=0):
    from export.fit_scorer import fit_background

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    vectors = np.concatenate([c + rng.normal(scale=0.3, size=(6, dim)) for c in centres])
    writers = [f"w{i}" for i in range(12) for _ in range(6)]
    return fit_background(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), writers), centres


def test_scorer_background_projects_a_writers_own_signatures_further_along_its_direction():
    background, centres = _background()
    rng = np.random.default_rng(1)
    refs = centres[3] + rng.normal(scale=0.3, size=(5, 8))
    same, other = centres[3] + rng.normal(scale=0.3, size=8), centres[7] + rng.normal(scale=0.3, size=8)
    proj, own = background.projections(np.stack([same, other]), refs)
    assert proj[0] > proj[1] and -1.0 <= proj[1] <= proj[0] <= 1.0
    assert own > proj[1]


def test_scorer_background_survives_the_manifest_and_refuses_a_malformed_one():
    from sigedge.errors import ModelError
    from sigedge.scoring import ScorerBackground

    background, _ = _background()
    block = json.loads(json.dumps(background.to_manifest()))
    again = ScorerBackground.from_manifest(block)
    x = np.random.default_rng(2).normal(size=(3, 8))
    np.testing.assert_allclose(again.whitened(x), background.whitened(x), atol=1e-5)  # float32 in the manifest
    assert block["signatures"] == 72 and block["writers"] == 12
    for broken in ({**block, "dim": 7}, {k: v for k, v in block.items() if k != "whiten"}, {**block, "mean": "!!"}):
        with pytest.raises(ModelError):
            ScorerBackground.from_manifest(broken)


def test_learned_scorer_with_a_background_weighs_the_direction_and_checks_its_weights():
    from sigedge.errors import ModelError
    from sigedge.scoring import LearnedScorer, scorer_features

    background, centres = _background()
    rng = np.random.default_rng(3)
    refs = centres[2] + rng.normal(scale=0.3, size=(4, 8))
    ref_ink = np.zeros((4, 4), np.float32)
    x = scorer_features(refs[:1], np.zeros((1, 1)), refs, ref_ink[:, :1], background=background)
    assert x.shape == (1, 6)  # cosine, aspect, direction; each minus the references' own
    with pytest.raises(ModelError, match="1 ink statistics, a background needs 6 weights"):
        LearnedScorer(coef=(1.0,) * 4, intercept=0.0, own_default=(0.9, 0.1), statistics=("log_aspect",),
                      background=background)
    only_direction = LearnedScorer(coef=(0.0, 0.0, 10.0, 0.0, 0.0, 0.0), intercept=0.0,
                                   own_default=(0.9, 0.1, 0.5), statistics=("log_aspect",), background=background)
    same, other = centres[2] + rng.normal(scale=0.3, size=8), centres[9] + rng.normal(scale=0.3, size=8)
    ink = np.zeros(4, np.float32)
    assert only_direction.score(same, ink, refs, ref_ink) > only_direction.score(other, ink, refs, ref_ink)
    # one reference: the default stands in for the references' own features, direction included
    assert only_direction.decision_many(same[None], ink[None], refs[:1], ref_ink[:1]).shape == (1,)
    manifest_block = {"coef": list(only_direction.coef), "intercept": 0.0, "own_default": [0.9, 0.1, 0.5],
                      "ink_statistics": ["log_aspect"], "background": background.to_manifest()}
    loaded = LearnedScorer.from_manifest(manifest_block)
    assert loaded.score(same, ink, refs, ref_ink) == pytest.approx(only_direction.score(same, ink, refs, ref_ink),
                                                                   abs=1e-4)


def test_learned_scorer_with_a_contour_hinge_reads_it_after_the_ink_statistics():
    from sigedge.errors import ModelError
    from sigedge.hinge import HingeSpec
    from sigedge.scoring import INK_STATISTICS, LearnedScorer

    spec = HingeSpec(fragments=(4,), bins=2)
    # features: cosine, aspect, hinge4 and each minus the references' own; only hinge4 weighs
    block = {"kind": "logistic", "coef": [0.0, 0.0, -10.0, 0.0, 0.0, 0.0], "intercept": 0.0,
             "own_default": [0.9, 0.1, 0.0], "ink_statistics": ["log_aspect"], "hinge": spec.to_manifest()}
    scorer = LearnedScorer.from_manifest(block)
    assert scorer.hinge == spec and scorer.width == len(INK_STATISTICS) + 4
    refs = np.eye(3, 8, dtype=np.float32)
    stats = np.zeros(len(INK_STATISTICS), np.float32)
    ref_ink = np.stack([np.r_[stats, 1.0, 0.0, 0.0, 0.0]] * 3)
    alike = scorer.score(refs[0], np.r_[stats, 1.0, 0.0, 0.0, 0.0], refs, ref_ink)
    unlike = scorer.score(refs[0], np.r_[stats, 0.0, 0.0, 0.0, 1.0], refs, ref_ink)
    assert alike == pytest.approx(0.5) and unlike < 0.01  # chi-square 0 against 1
    with pytest.raises(ValueError, match="reads 8 values"):  # the ink statistics alone: no hinge to read
        scorer.score(refs[0], stats, refs, ref_ink[:, :len(INK_STATISTICS)])
    with pytest.raises(ModelError, match="a contour hinge needs 6 weights"):
        LearnedScorer.from_manifest({**block, "coef": block["coef"][:4]})


def test_learned_scorer_with_strip_embeddings_reads_them_after_the_hinge():
    from sigedge.errors import ModelError
    from sigedge.hinge import HingeSpec
    from sigedge.scoring import INK_STATISTICS, LearnedScorer, StripSpec, strip_distances

    hinge, strips = HingeSpec(fragments=(4,), bins=2), StripSpec(count=2, span=0.6, dim=3)
    # features: cosine, aspect, hinge4, strip1, strip2 and each minus the references' own; strip2 alone weighs
    block = {"kind": "logistic", "coef": [0.0] * 4 + [-10.0] + [0.0] * 5, "intercept": 0.0,
             "own_default": [0.9, 0.1, 0.0, 0.0, 0.0], "ink_statistics": ["log_aspect"],
             "hinge": hinge.to_manifest(), "strips": strips.to_manifest()}
    scorer = LearnedScorer.from_manifest(block)
    assert scorer.strips == strips and scorer.width == len(INK_STATISTICS) + 4 + 6
    refs = np.eye(3, 8, dtype=np.float32)
    head = np.r_[np.zeros(len(INK_STATISTICS)), 1.0, 0.0, 0.0, 0.0]
    e = np.eye(3)
    ref_ink = np.stack([np.r_[head, e[0], e[1]]] * 3)
    alike = scorer.score(refs[0], np.r_[head, e[2], e[1]], refs, ref_ink)  # only strip 1 differs: unweighed
    unlike = scorer.score(refs[0], np.r_[head, e[0], e[2]], refs, ref_ink)  # strip 2 at right angles
    assert alike == pytest.approx(0.5) and unlike < 0.01
    np.testing.assert_allclose(strip_distances(np.r_[e[0], e[1]], np.r_[e[0], e[2]], strips), [0.0, 1.0])
    with pytest.raises(ValueError, match="reads 14 values"):  # measured without the strips
        scorer.score(refs[0], head, refs, ref_ink[:, :8])
    with pytest.raises(ModelError, match="strip embeddings are malformed"):
        LearnedScorer.from_manifest({**block, "strips": {"count": 2}})
    with pytest.raises(ModelError, match="strip embeddings need 10 weights|needs 10 weights"):
        LearnedScorer.from_manifest({**block, "coef": block["coef"][:8]})
