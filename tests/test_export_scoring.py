"""The bundle's per-writer normalisation: fitted on training writers, thresholds recalibrated."""

import csv
import json
import shutil

import numpy as np
import pytest

from export.scoring import calibrate_bundle, fit_normalisation
from sigedge import Pipeline
from sigedge.bundle import default_bundle_dir
from sigedge.errors import SigedgeError
from tests.helpers import make_eval_csv


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


def test_fit_normalisation_learns_a_strength_between_none_and_full():
    norm, info = fit_normalisation([writers_with_spreads(0, 1.0), writers_with_spreads(1, 1.0)])
    assert 0.0 < norm.strength < 1.0
    assert 0.0 < norm.centre < 1.0
    assert info["trials"] > 0 and len(info["logistic_coef"]) == 2


def test_fit_normalisation_refuses_weights_that_do_not_grow_with_the_cosine(monkeypatch):
    import export.scoring as scoring

    monkeypatch.setattr(scoring, "fit_logistic", lambda x, y, w: (np.array([-1.0, 0.5]), 0.0))
    with pytest.raises(SigedgeError, match="do not increase"):
        fit_normalisation([writers_with_spreads(2, 1.0)], draws=1)


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


def test_calibrate_bundle_rewrites_only_the_verification_contract(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    before = json.loads((bundle / "manifest.json").read_text())
    ver = calibrate_bundle(bundle, fake_splits(tmp_path), draws=2)
    after = json.loads((bundle / "manifest.json").read_text())
    assert after["models"] == before["models"]  # model files and their hashes untouched
    assert after["verification"] == ver
    assert set(ver["thresholds"]) == set(before["verification"]["thresholds"])
    assert ver["band"]["reject"] <= ver["band"]["accept"]
    assert 0.0 < ver["writer_normalisation"]["strength"] < 1.0
    assert after["identification"]["threshold"] == pytest.approx(after["identification"]["threshold"])
    pipe = Pipeline(bundle)  # the hashes still check out and the normalisation is in force
    assert pipe.normalisation is not None
    assert pipe.normalisation.strength == pytest.approx(ver["writer_normalisation"]["strength"])
