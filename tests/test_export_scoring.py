"""The bundle's per-writer normalisation: fitted on training writers, thresholds recalibrated."""

import csv
import json
import shutil

import numpy as np
import pytest

from export.export_embedder import calibrate
from export.scoring import EVAL_REFERENCES, calibrate_bundle, embed_rows, fit_normalisation, read_split
from sigedge import Gallery, Pipeline
from sigedge.bundle import default_bundle_dir
from sigedge.errors import SigedgeError
from sigedge.evaluate import protocol_scores
from sigedge.scoring import WriterNormalisation
from tests.helpers import assert_only_scoring_changed, make_eval_csv


def writers_with_spreads(seed: int, forged_offset: float, n_writers: int = 12):
    """Embeddings where each writer has its own spread and forgeries sit ``forged_offset`` away."""
    rng = np.random.default_rng(seed)
    emb, writers, kinds = [], [], []
    for w in range(n_writers):
        centre = rng.normal(size=32)
        centre /= np.linalg.norm(centre)
        spread = rng.uniform(0.1, 0.5)
        forged_centre = centre + forged_offset * rng.normal(size=32) / np.sqrt(32)
        for kind, c, n in (("genuine", centre, 10), ("forgery", forged_centre, 4)):
            for _ in range(n):
                v = c + spread * rng.normal(size=32) / np.sqrt(32)
                emb.append(v / np.linalg.norm(v))
                writers.append(f"w{w}")
                kinds.append(kind)
    return np.array(emb, np.float32), writers, kinds


def test_fit_normalisation_learns_a_positive_strength_where_writers_differ_in_spread():
    sets = [writers_with_spreads(0, 1.0, n_writers=30), writers_with_spreads(1, 1.0, n_writers=30)]
    norm, info = fit_normalisation(sets, resamples=50)
    low, high = info["strength_interval_90"]
    assert 0.0 < low <= norm.strength <= high
    assert norm.centre == pytest.approx(0.9, abs=0.05)  # the fit writers' typical agreement
    assert info["trials"] > 0 and info["writers"] == 60 and len(info["logistic_coef"]) == 2


def test_fit_normalisation_refuses_a_strength_the_writers_do_not_determine(monkeypatch):
    """E.g. an embedder's own training writers, whose references all agree almost alike: the
    bootstrap over writers then finds strengths of both signs."""
    import export.scoring as scoring

    signs = iter([0.3] + [(-1) ** i * 0.5 for i in range(100)])
    monkeypatch.setattr(scoring, "_strength", lambda x, kind: (next(signs), np.array([1.0, -0.3]), 0.0))
    with pytest.raises(SigedgeError, match="do not determine the strength"):
        fit_normalisation([writers_with_spreads(5, 1.0)], resamples=20)


def test_fit_normalisation_refuses_weights_that_do_not_grow_with_the_cosine(monkeypatch):
    import export.scoring as scoring

    monkeypatch.setattr(scoring, "fit_logistic", lambda x, y, w, l2: (np.array([-1.0, 0.5]), 0.0))
    with pytest.raises(SigedgeError, match="do not increase"):
        fit_normalisation([writers_with_spreads(2, 1.0)], draws=1, resamples=5)


def test_fit_normalisation_needs_writers_with_enough_genuines():
    emb, writers, kinds = writers_with_spreads(3, 1.0)
    with pytest.raises(SigedgeError, match="more than 12 genuine"):
        fit_normalisation([(emb, writers, kinds)], refs=12)


def fake_splits(root):
    """Split CSVs for the three collections over generated signatures."""
    splits = root / "splits"
    for i, coll in enumerate(("sigcomp2011_dutch", "ssbi", "cross_media_chinese")):
        for part in ("train", "val"):
            folder = splits / f"{coll}_{part}"
            folder.mkdir(parents=True)
            src = make_eval_csv(folder, writers=3, genuine=7, forgeries=2 if coll != "cross_media_chinese" else 0)
            with open(src, newline="") as f:
                rows = list(csv.DictReader(f))
            with open(splits / f"{coll}_{part}.csv", "w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["path", "writer", "kind"])
                out.writerows([[f"{folder.name}/{r['path']}", f"{coll}{i}-{r['writer']}", r["kind"]] for r in rows])
    return splits


def test_calibrate_bundle_rewrites_only_the_verification_contract(tmp_path, monkeypatch):
    import export.scoring as scoring

    fitted = WriterNormalisation(strength=0.4, centre=0.8)
    seen = {}

    def fake_fit(sets, **kwargs):  # the fit itself is tested above; here, what is done with it
        seen["writers"] = sorted({w for _, writers, _ in sets for w in writers})
        return fitted, {"trials": 1, "writers": 1, "strength_interval_90": [0.3, 0.5]}

    monkeypatch.setattr(scoring, "fit_normalisation", fake_fit)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = json.loads((bundle / "manifest.json").read_text())
    splits = fake_splits(tmp_path)
    ver = calibrate_bundle(bundle, splits, draws=2, fit_part="val")
    assert seen["writers"] and all(w.split("-")[0] in ("sigcomp2011_dutch0", "ssbi1") for w in seen["writers"])
    after = json.loads((bundle / "manifest.json").read_text())
    assert_only_scoring_changed(before, after)
    assert after["verification"] == ver
    assert set(ver["thresholds"]) == set(before["verification"]["thresholds"])
    assert ver["band"]["reject"] <= ver["band"]["accept"]
    norm = ver["writer_normalisation"]
    assert (norm["strength"], norm["centre"]) == (0.4, 0.8) and "val writers" in norm["fitted_on"]
    # fitted on the validation writers themselves: the report scores each with the other half's fit
    assert "normalised_cross_fitted" in norm["validation_eer"]["sigcomp2011_dutch"]
    assert "normalised_cross_fitted" not in norm["validation_eer"]["cross_media_chinese"]  # not fitted on
    # identify ranks by the plain cosine: its threshold is the plain cosine's random FAR 1 %
    scores = {}
    pipe = Pipeline(bundle)
    for coll, refs in EVAL_REFERENCES.items():
        emb, writers, kinds = embed_rows(pipe, read_split(splits / f"{coll}_val.csv"))
        scores[coll] = protocol_scores(emb, writers, kinds, refs, seed=0)
    assert after["identification"]["threshold"] == pytest.approx(calibrate(scores)["far_random_1pct"])
    assert pipe.normalisation == fitted  # the hashes still check out and the normalisation is in force
    assert Gallery(tmp_path / "g.gallery", pipe).identify_threshold == after["identification"]["threshold"]


def test_cross_fitted_scores_each_writer_with_a_fit_made_without_it(monkeypatch):
    import export.scoring as scoring

    fits = []

    def recording_fit(sets, **kwargs):
        writers = frozenset((c, w) for c, (_, ws, _) in zip(scoring.FIT_COLLECTIONS, sets) for w in ws)
        fits.append(writers)
        return WriterNormalisation(strength=len(fits) / 10, centre=0.5), {}

    monkeypatch.setattr(scoring, "fit_normalisation", recording_fit)
    sets = [writers_with_spreads(0, 1.0, n_writers=5), writers_with_spreads(1, 1.0, n_writers=4)]
    out = scoring.cross_fitted(sets)
    every = {(c, w) for c, (_, ws, _) in zip(scoring.FIT_COLLECTIONS, sets) for w in ws}
    assert set(out) == every and len(fits) == 2
    assert fits[0] | fits[1] == every and not fits[0] & fits[1]  # two disjoint halves
    for key, norm in out.items():
        made_on = fits[round(norm.strength * 10) - 1]
        assert key not in made_on  # never scored with a fit that saw it


def test_writing_a_fit_on_the_embedders_own_training_writers_is_refused(tmp_path, capsys):
    from export.scoring import main

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = (bundle / "manifest.json").read_bytes()
    assert main(["--bundle", str(bundle), "--splits", str(fake_splits(tmp_path)), "--fit-part", "train"]) == 2
    assert (bundle / "manifest.json").read_bytes() == before  # nothing written
