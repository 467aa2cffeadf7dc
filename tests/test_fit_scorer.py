"""The bundle's learned scorer: fitted on training writers, rescaled and calibrated on validation writers."""

import json
import shutil

import numpy as np
import pytest

from export.fit_scorer import STATISTICS, feature_names, fit_bundle, fit_scorer, main
from sigedge import Gallery, Pipeline
from sigedge.bundle import default_bundle_dir
from sigedge.evaluate import protocol_scores
from sigedge.metrics import equal_error_rate
from sigedge.scoring import INK_STATISTICS, LearnedScorer
from tests.helpers import assert_only_scoring_changed
from tests.test_export_scoring import fake_splits, writers_with_spreads


def with_ink(seed: int, n_writers: int = 20):
    """Embeddings as in test_export_scoring, plus ink statistics in which forgeries are wider."""
    emb, writers, kinds = writers_with_spreads(seed, 1.0, n_writers=n_writers)
    rng = np.random.default_rng(seed)
    base = {w: rng.normal(size=4) for w in set(writers)}
    ink = np.stack([base[w] + rng.normal(scale=0.05, size=4) + (k == "forgery") * np.array([0.6, 0, 0, 0])
                    for w, k in zip(writers, kinds)]).astype(np.float32)
    return emb, ink, writers, kinds


def test_fit_scorer_learns_from_the_cosine_and_the_ink():
    scorer, info = fit_scorer([with_ink(0), with_ink(1)], refs=[5, 5])
    assert scorer.statistics == STATISTICS and len(scorer.coef) == 2 * (1 + len(STATISTICS))
    names = feature_names(STATISTICS)
    weight = dict(zip(names, scorer.coef))
    assert weight["cosine"] > 0 and weight["log_aspect"] < 0  # forgeries here are wider than the references
    assert info["trials"] == sum(info["trials_by_kind"].values()) > 0
    emb, ink, writers, kinds = with_ink(7)
    learned = protocol_scores(emb, writers, kinds, 5, seed=0, scorer=scorer, ink=ink)
    cosine = protocol_scores(emb, writers, kinds, 5, seed=0)
    assert equal_error_rate(learned.genuine, learned.skilled)[0] < equal_error_rate(cosine.genuine, cosine.skilled)[0]


def cosine_only_scorer():
    n = 1 + len(STATISTICS)
    return LearnedScorer(coef=(10.0,) + (0.0,) * (2 * n - 1), intercept=-8.0, own_default=(0.9,) + (0.1,) * (n - 1),
                         statistics=STATISTICS)


def test_fit_bundle_rewrites_only_the_verification_contract(tmp_path, monkeypatch):
    import export.fit_scorer as fs

    seen = {}

    def fake_fit(sets, refs, **kwargs):  # the fit itself is tested above; here, what is done with it
        seen["writers"] = sorted({w for _, _, writers, _ in sets for w in writers})
        return cosine_only_scorer(), {"trials": 1, "trials_by_kind": {}}

    monkeypatch.setattr(fs, "fit_scorer", fake_fit)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = json.loads((bundle / "manifest.json").read_text())
    splits = fake_splits(tmp_path)
    ver = fit_bundle(bundle, splits, draws=2, query_rotations=(0.0,))  # upright (the search: below)
    # fitted on the training writers of the collections with skilled forgeries only
    assert seen["writers"] and all(w.split("-")[0] in ("sigcomp2011_dutch0", "ssbi1") for w in seen["writers"])
    after = json.loads((bundle / "manifest.json").read_text())
    assert_only_scoring_changed(before, after)
    assert after["verification"] == ver
    block = ver["scorer"]
    assert block["ink_statistics"] == list(STATISTICS) and block["features"] == feature_names(STATISTICS)
    assert block["rescaled"]["slope"] > 0  # rescaled on the validation writers: the weights scale with it
    assert block["coef"][0] == pytest.approx(10.0 * block["rescaled"]["slope"])
    # one reference stands in for the validation writers' references among themselves, not the fit's
    assert block["own_default"] != list(cosine_only_scorer().own_default) and 0 < block["own_default"][0] <= 1
    one = block["one_reference_at_default_threshold"]
    assert set(one) == {"sigcomp2011_dutch", "ssbi"} and set(one["ssbi"]) == {"cosine", "learned"}
    assert set(block["validation_eer"]) == {"sigcomp2011_dutch", "ssbi", "cross_media_chinese"}
    assert all(0.0 <= t <= 1.0 for t in ver["thresholds"].values())  # probabilities
    assert set(ver["thresholds"]) == set(ver["cosine"]["thresholds"])
    assert ver["band"]["reject"] <= ver["band"]["accept"]
    pipe = Pipeline(bundle)  # the hashes still check out and the scorer is in force
    assert pipe.scorer is not None and pipe.scorer.statistics == STATISTICS
    cosine_pipe = Pipeline(bundle, options=__import__("sigedge").PipelineOptions(scorer="cosine"))
    assert cosine_pipe.threshold == ver["cosine"]["thresholds"][ver["cosine"]["default_threshold"]]
    # identify ranks by the plain cosine: its threshold is the cosine's random FAR 1 %
    assert after["identification"]["threshold"] == ver["cosine"]["thresholds"]["far_random_1pct"]
    assert Gallery(tmp_path / "g.gallery", pipe).identify_threshold == after["identification"]["threshold"]
    # fitting again (the bundle now states a scorer) reads the cosine's own calibration
    assert fit_bundle(bundle, splits, draws=1, write=False, query_rotations=(0.0,))["cosine"]["thresholds"] == \
        ver["cosine"]["thresholds"]


@pytest.mark.parametrize("cosine_weight, aspect_weight, refusal", [
    (-10.0, 0.0, "do not rank the validation writers' genuines first"),  # backwards: refused at the rescaling
    (0.5, -20.0, "does worse than the cosine"),  # ranks by a statistic more than by the cosine
])
def test_a_scorer_worse_than_the_cosine_is_refused(tmp_path, monkeypatch, caplog, cosine_weight, aspect_weight,
                                                   refusal):
    import export.fit_scorer as fs

    n = 1 + len(STATISTICS)
    coef = (cosine_weight, aspect_weight) + (0.0,) * (2 * n - 2)
    worse = LearnedScorer(coef=coef, intercept=0.0, own_default=(0.9,) + (0.1,) * (n - 1), statistics=STATISTICS)
    monkeypatch.setattr(fs, "fit_scorer", lambda sets, refs, **kw: (worse, {"trials": 1}))
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = (bundle / "manifest.json").read_bytes()
    assert main(["--bundle", str(bundle), "--splits", str(fake_splits(tmp_path)), "--draws", "1"]) == 1
    assert refusal in caplog.text
    assert (bundle / "manifest.json").read_bytes() == before  # nothing written


def test_the_packaged_bundle_states_the_fitted_scorer():
    manifest = json.loads((default_bundle_dir() / "manifest.json").read_text())
    block = manifest["verification"]["scorer"]
    assert set(block["ink_statistics"]) <= set(INK_STATISTICS)
    assert block["command"].startswith("python -m export.fit_scorer")
    # cross-fitted on other folds' validation writers, with the skeleton's contour hinge
    assert "cross-fitted" in block["fitted_on"] and all(f"fold{k}" in block["fitted_on"] for k in (1, 2, 3))
    assert "--cross-fit" in block["command"] and "--hinge" in block["command"]
    from sigedge.hinge import HingeSpec
    assert HingeSpec.from_manifest(block["hinge"]) == HingeSpec()
    assert block["features"] == feature_names(tuple(block["ink_statistics"]), True, HingeSpec())


def test_collection_weights_balance_kinds_and_collections():
    from export.fit_scorer import collection_weights

    skilled = np.array(["genuine"] * 4 + ["skilled"] * 2 + ["random"] * 8)
    random_only = np.array(["genuine"] * 10 + ["random"] * 90)  # a collection without skilled forgeries
    w = collection_weights([skilled, random_only])
    a, b = w[:len(skilled)], w[len(skilled):]
    assert w.sum() == pytest.approx(len(w))  # the ridge penalty keeps its strength
    assert a.sum() == pytest.approx(b.sum())  # each collection alike, whatever its size
    assert a[skilled == "genuine"].sum() == pytest.approx(a[skilled != "genuine"].sum())
    assert a[skilled == "skilled"].sum() == pytest.approx(a[skilled == "random"].sum())
    assert b[random_only == "genuine"].sum() == pytest.approx(b[random_only == "random"].sum())


def test_fit_bundle_calibrates_the_query_rotations_by_default_and_reports_them(tmp_path, monkeypatch):
    import export.fit_scorer as fs

    monkeypatch.setattr(fs, "fit_scorer", lambda sets, refs, **kw: (cosine_only_scorer(), {"trials": 1}))
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    ver = fit_bundle(bundle, fake_splits(tmp_path), draws=1)  # by default, as the packaged bundle is fitted
    assert ver["query_rotations"] == [-10.0, 0.0, 10.0] and "best of the rotations" in ver["calibrated_on"]
    assert set(ver["scorer"]["validation_eer"]["ssbi"]) == {"cosine", "learned", "cosine_upright", "learned_upright"}
    assert Pipeline(bundle).query_rotations == (-10.0, 0.0, 10.0)  # verification then turns every query
    # identify turns no query: its threshold comes from the upright cosine, not the rotated one
    manifest = json.loads((bundle / "manifest.json").read_text())
    from export.export_embedder import calibrate
    from export.fit_scorer import describe_rows
    from export.scoring import EVAL_REFERENCES, read_split

    upright = {}
    pipe = Pipeline(bundle, __import__("sigedge").PipelineOptions(query_rotations=(0.0,), scorer="cosine"))
    splits = tmp_path / "splits"
    for coll, refs in EVAL_REFERENCES.items():
        emb, _, writers, kinds = describe_rows(pipe, read_split(splits / f"{coll}_val.csv"))
        upright[coll] = protocol_scores(emb, writers, kinds, refs, seed=0)
    assert manifest["identification"]["threshold"] == pytest.approx(calibrate(upright)["far_random_1pct"])
    # the writer normalisation tool, run on this bundle afterwards, calibrates upright and says so
    from export.scoring import calibrate_bundle

    monkeypatch.setattr("export.scoring.fit_normalisation", lambda sets, **kw: (
        __import__("sigedge.scoring", fromlist=["x"]).WriterNormalisation(0.4, 0.8), {"trials": 1}))
    assert calibrate_bundle(bundle, splits, draws=1, fit_part="val")["query_rotations"] == [0.0]
    assert Pipeline(bundle).query_rotations == (0.0,)


def test_fit_background_needs_several_writers_and_enough_signatures():
    from export.fit_scorer import fit_background
    from sigedge.errors import UsageError

    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="several writers"):
        fit_background(rng.normal(size=(50, 8)), ["one"] * 50)
    with pytest.raises(UsageError, match="more signatures"):
        fit_background(rng.normal(size=(6, 8)), ["a", "b"] * 3)


def test_fit_scorer_with_a_background_adds_the_direction_pair():
    from export.fit_scorer import fit_background

    emb, ink, writers, kinds = with_ink(0)
    genuine = [i for i, k in enumerate(kinds) if k == "genuine"]
    background = fit_background(emb[genuine], [writers[i] for i in genuine])
    scorer, _ = fit_scorer([with_ink(1), with_ink(2)], refs=[5, 5], background=background)
    assert len(scorer.coef) == len(feature_names(STATISTICS, background=True)) == 2 * (2 + len(STATISTICS))
    assert len(scorer.own_default) == 2 + len(STATISTICS) and scorer.background is background


def test_fit_bundle_with_a_background_writes_it_and_the_pipeline_scores_with_it(tmp_path, monkeypatch):
    import export.fit_scorer as fs
    from sigedge.scoring import ScorerBackground

    seen = {}

    def small_background(vectors, writers, shrink=0.1):  # the generated splits have fewer signatures than dims
        seen["writers"] = sorted(set(writers))
        mean = np.asarray(vectors, np.float64).mean(axis=0)
        return ScorerBackground(mean=mean, whiten=np.eye(len(mean)), whitened_mean=np.zeros_like(mean))

    def fit(sets, refs, background=None, **kw):  # the cosine's weights (the fit itself is tested above)
        n = 2 + len(STATISTICS)
        return LearnedScorer(coef=(10.0,) + (0.0,) * (2 * n - 1), intercept=-8.0,
                             own_default=(0.9,) + (0.1,) * (n - 1), statistics=STATISTICS,
                             background=background), {"trials": 1}

    monkeypatch.setattr(fs, "fit_background", small_background)
    monkeypatch.setattr(fs, "fit_scorer", fit)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    splits = fake_splits(tmp_path)
    ver = fit_bundle(bundle, splits, draws=1, background=True)
    # the training writers of every collection, never a validation one
    assert seen["writers"] and all("_val" not in w for w in seen["writers"])
    assert {w.split("/")[0] for w in seen["writers"]} == {"sigcomp2011_dutch", "ssbi", "cross_media_chinese"}
    block = json.loads((bundle / "manifest.json").read_text())["verification"]["scorer"]
    assert block["features"][-1] == "direction-references" and len(block["coef"]) == len(block["features"])
    assert block["background"]["dim"] == 128 and "training writers" in block["background"]["fitted_on"]
    pipe = Pipeline(bundle)
    assert pipe.scorer.background is not None
    images = sorted((splits / "ssbi_val").glob("*.png"))
    result = pipe.verify(images[0], images[1:4])
    assert result.scorer == "learned" and 0.0 <= result.score <= 1.0
    assert ver["scorer"]["background"] == block["background"]


def test_fit_with_a_background_on_too_few_signatures_is_refused_in_one_line(tmp_path, caplog):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = (bundle / "manifest.json").read_bytes()
    assert main(["--bundle", str(bundle), "--splits", str(fake_splits(tmp_path)), "--draws", "1",
                 "--background"]) == 2
    assert "more signatures than the embedding has dimensions" in caplog.text
    assert (bundle / "manifest.json").read_bytes() == before


def test_a_background_of_another_dimension_than_the_embedder_is_refused_at_load(tmp_path):
    from sigedge.errors import ModelError
    from sigedge.scoring import ScorerBackground

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    block = manifest["verification"]["scorer"]
    block["background"] = ScorerBackground(mean=np.zeros(64), whiten=np.eye(64), whitened_mean=np.zeros(64)).to_manifest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="background has dimension 64, the embedder 128"):
        Pipeline(bundle)


def test_set_weights_pool_the_sets_of_one_collection():
    from export.fit_scorer import collection_weights, set_weights

    a1, b, a2 = np.array(["genuine", "skilled", "random"]), np.array(["genuine", "random"]), np.array(["genuine"] * 2)
    pooled = collection_weights([np.concatenate([a1, a2]), b])  # collection a's trials, then b's
    np.testing.assert_allclose(set_weights([a1, b, a2], ["a", "b", "a"]),
                               np.concatenate([pooled[:3], pooled[5:], pooled[3:5]]))
    np.testing.assert_allclose(set_weights([a1, b], ["0", "1"]), collection_weights([a1, b]))


def test_fit_scorer_with_a_contour_hinge_learns_that_forgeries_turn_otherwise():
    from sigedge.hinge import HingeSpec

    spec = HingeSpec(fragments=(4,), bins=2)

    def with_hinge(seed):
        emb, ink, writers, kinds = with_ink(seed)
        rng = np.random.default_rng(100 + seed)
        own = {w: rng.dirichlet(np.ones(4) * 5) for w in set(writers)}
        hist = np.stack([rng.dirichlet(own[w] * 200) if k == "genuine" else rng.dirichlet(np.ones(4) * 5)
                         for w, k in zip(writers, kinds)])
        return emb, np.hstack([ink, hist]).astype(np.float32), writers, kinds

    scorer, _ = fit_scorer([with_hinge(0), with_hinge(1)], refs=[5, 5], hinge=spec)
    assert scorer.hinge == spec and len(scorer.coef) == 2 * (2 + len(STATISTICS))
    weight = dict(zip(feature_names(STATISTICS, hinge=spec), scorer.coef))
    assert weight["hinge4"] + weight["hinge4-references"] < 0  # further from the references' turns: less genuine


def test_fit_bundle_cross_fitted_with_the_hinge_fits_on_the_other_fold_and_states_it(tmp_path, monkeypatch):
    import export.fit_scorer as fs
    from sigedge.errors import UsageError
    from sigedge.hinge import HingeSpec

    seen = {}

    def fit(sets, refs, background=None, hinge=None, set_backgrounds=None, collections=None, **kw):
        seen.update(writers=sorted({w for _, _, writers, _ in sets for w in writers}), collections=collections,
                    widths={ink.shape[1] for _, ink, _, _ in sets})
        n = 1 + len(STATISTICS) + len(hinge.fragments)
        return LearnedScorer(coef=(10.0,) + (0.0,) * (2 * n - 1), intercept=-8.0, own_default=(0.9,) + (0.1,) * (n - 1),
                             statistics=STATISTICS, hinge=hinge), {"trials": 1}

    monkeypatch.setattr(fs, "fit_scorer", fit)
    bundle, other = tmp_path / "bundle", tmp_path / "other"
    shutil.copytree(default_bundle_dir(), bundle)
    shutil.copytree(default_bundle_dir(), other)
    splits, other_splits = fake_splits(tmp_path / "a"), fake_splits(tmp_path / "b")
    ver = fit_bundle(bundle, splits, draws=1, query_rotations=(0.0,), hinge=True, cross_fit=[(other_splits, other)])
    # the other fold's validation writers of the collections with skilled forgeries, with their hinge
    val_writers = {w for c in ("sigcomp2011_dutch", "ssbi") for _, w, _ in fs.read_split(other_splits / f"{c}_val.csv")}
    assert set(seen["writers"]) == val_writers and seen["collections"] == ["sigcomp2011_dutch", "ssbi"]
    assert seen["widths"] == {len(INK_STATISTICS) + HingeSpec().size}
    block = ver["scorer"]
    assert block["hinge"] == HingeSpec().to_manifest() and block["features"][3:5] == ["hinge4", "hinge8"]
    assert "cross-fitted" in block["fitted_on"] and str(other_splits.name) in block["fitted_on"]
    pipe = Pipeline(bundle)
    assert pipe.hinge == HingeSpec() and pipe.scorer.hinge == HingeSpec()
    images = sorted((splits / "ssbi_val").glob("*.png"))
    assert pipe.describe(images[0]).ink.shape == (pipe.ink_width,)
    assert pipe.verify(images[0], images[1:4]).scorer == "learned"
    # a fold whose validation writers are the ones reported on is refused
    with pytest.raises(UsageError, match="validation images of"):
        fit_bundle(bundle, splits, draws=1, write=False, query_rotations=(0.0,), hinge=True, cross_fit=[(splits, other)])


def test_cross_fitting_on_a_folder_without_the_split_is_one_usage_error(tmp_path, caplog):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = (bundle / "manifest.json").read_bytes()
    assert main(["--bundle", str(bundle), "--splits", str(fake_splits(tmp_path)), "--draws", "1", "--hinge",
                 "--cross-fit", f"{tmp_path / 'nowhere'}={bundle}"]) == 2
    assert "no sigcomp2011_dutch_val.csv in" in caplog.text
    assert (bundle / "manifest.json").read_bytes() == before


def test_fit_bundle_with_strips_states_them_and_the_pipeline_embeds_them(tmp_path, monkeypatch):
    import export.fit_scorer as fs
    from sigedge.errors import ModelError
    from sigedge.hinge import HingeSpec
    from sigedge.scoring import StripSpec

    seen = {}

    def fit(sets, refs, background=None, hinge=None, set_backgrounds=None, collections=None, strips=None, **kw):
        seen.update(widths={ink.shape[1] for _, ink, _, _ in sets}, strips=strips)
        n = 1 + len(STATISTICS) + len(hinge.fragments) + strips.count
        return LearnedScorer(coef=(10.0,) + (0.0,) * (2 * n - 1), intercept=-8.0, own_default=(0.9,) + (0.1,) * (n - 1),
                             statistics=STATISTICS, hinge=hinge, strips=strips), {"trials": 1}

    monkeypatch.setattr(fs, "fit_scorer", fit)
    bundle, other = tmp_path / "bundle", tmp_path / "other"
    shutil.copytree(default_bundle_dir(), bundle)
    shutil.copytree(default_bundle_dir(), other)
    splits, other_splits = fake_splits(tmp_path / "a"), fake_splits(tmp_path / "b")
    ver = fit_bundle(bundle, splits, draws=1, query_rotations=(0.0,), hinge=True, strips=True,
                     cross_fit=[(other_splits, other)])
    dim = Pipeline(bundle).dim
    # the other fold's bundle measured the strips too, with its own embedder
    assert seen["strips"] == StripSpec(dim=dim) and seen["widths"] == {len(INK_STATISTICS) + HingeSpec().size + 2 * dim}
    block = ver["scorer"]
    assert block["strips"] == StripSpec(dim=dim).to_manifest() and block["features"][5:7] == ["strip1", "strip2"]
    pipe = Pipeline(bundle)
    assert pipe.strips == pipe.scorer.strips == StripSpec(dim=dim)
    assert pipe.ink_layout == "statistics+hinge:skeleton,200,4-8,12+strips:2,0.6"
    images = sorted((splits / "ssbi_val").glob("*.png"))
    ink = pipe.describe(images[0]).ink
    assert ink.shape == (pipe.ink_width,) == (len(INK_STATISTICS) + HingeSpec().size + 2 * dim,)
    # each strip's embedding is unit length, as a whole signature's is
    np.testing.assert_allclose(np.linalg.norm(ink[-2 * dim:].reshape(2, dim), axis=1), 1.0, atol=1e-4)
    assert pipe.verify(images[0], images[1:4]).scorer == "learned"
    with Gallery(tmp_path / "g", pipe) as g:
        g.enroll("w", images[1:4])
        assert g.verify("w", images[0]).scorer == "learned"
    from sigedge.bench import run_bench  # times the strips (this bundle turns no query: each stage once)

    report = run_bench(bundle, [], repeat=1)
    stages = report["stages"]
    assert stages["strip_embeddings"]["p50_ms"] > 0 and report["end_to_end_p50_ms"] > sum(
        stages[s]["p50_ms"] for s in ("decode", "normalise", "strip_embeddings"))
    # a manifest whose strips are of another dimension than its embedder is refused at load
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["verification"]["scorer"]["strips"]["dim"] = dim + 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="strip embeddings have dimension"):
        Pipeline(bundle)
