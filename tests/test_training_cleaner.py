"""The learned cleaner's training pairs, a few-step training run with QAT, int8 export, runtime use."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from sigedge.bundle import default_bundle_dir
from sigedge.synth import synthetic_signature
from tests.helpers import make_fake_data_root, write_png

pytestmark = [pytest.mark.train]


def fake_cheques(data):
    """ssbi/checks like the real folder: templates with a COCO signature box."""
    folder = data / "ssbi" / "checks"
    images, annotations = [], []
    for k in range(2):
        page = np.full((300, 720), 235, np.uint8)
        cv2.putText(page, "PAY TO THE ORDER OF", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 40, 2)
        cv2.line(page, (420, 250), (700, 250), 30, 2)
        cv2.putText(page, "Authorized signature", (440, 280), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 40, 1)
        write_png(folder / "data" / f"check_{k + 1:03d}.png", page)
        images.append({"id": k + 1, "file_name": f"check_{k + 1:03d}.png", "width": 720, "height": 300})
        annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [420, 170, 280, 80]})
    (folder / "labels.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                    "categories": [{"id": 1, "name": "signature"}]}))


@pytest.fixture(scope="module")
def pair_sources(tmp_path_factory):
    from training.cleansynth import ClutterSources
    from training.docsynth import SignaturePool

    tmp = tmp_path_factory.mktemp("cleanerdata")
    data = make_fake_data_root(tmp / "data", writers=3, genuine=3, forgeries=1)
    pool = SignaturePool.from_paths(sorted((data / "sigcomp2011_dutch" / "images").rglob("*.png")))
    from tests.test_training_detector import make_fake_documents

    make_fake_documents(data, pool, pages=6)
    fake_cheques(data)
    names = sorted(p.name for p in (data / "documents_tobacco800" / "images").iterdir())
    return data, pool, ClutterSources.load(data, names, range(7))


def test_pairs_mark_the_signature_and_only_it(pair_sources):
    from training.cleansynth import KINDS, CleanerSynth, canvas_pair
    from sigedge.normalize import binarize, flatten_background

    _, pool, sources = pair_sources
    assert sources.pages and len(sources.cheques) == 2
    synth = CleanerSynth(pool, sources, seed=1)
    for kind in KINDS:
        crop, target, got = synth.crop(kind)
        assert got == kind and crop.dtype == np.uint8 and crop.shape == target.shape and target.any()
        ink = binarize(flatten_background(crop))
        # the target is the signature's ink: nearly all of it is ink in the degraded crop
        assert (ink & target).sum() >= 0.8 * target.sum()
        clutter = (ink & ~target).sum() / max(1, ink.sum())
        if kind == "plain":
            assert clutter < 0.15  # only the blurred edges of strokes, no clutter
        x, y = canvas_pair(crop, target, 128, 256)
        assert x.shape == y.shape == (128, 256) and 0.0 <= x.min() and x.max() <= 1.0
        assert 0.0 <= y.min() and y.max() <= 1.0 and y.sum() > 0
    # clutter kinds carry ink that is not the signature's, on average over a few crops
    shares = [(lambda c, t: (binarize(flatten_background(c)) & ~t).sum() / t.sum())(*synth.crop("synthetic")[:2])
              for _ in range(6)]
    assert np.mean(shares) > 0.05
    # the given signature is used when one is passed
    own = (255 - cv2.cvtColor(synthetic_signature(9, 0), cv2.COLOR_BGR2GRAY))
    crop, target, _ = synth.crop("plain", ink=own)
    assert target.any()


def test_learned_cleaning_metrics_count_ink_pixels_only():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from training.train_cleaner import ink_f1

    canvas = np.zeros((1, 4, 4, 1), np.float32)
    canvas[0, 0, :3] = 1.0  # ink: two signature pixels and the stroke's edge beside them
    canvas[0, 3, 2:] = 1.0  # two clutter pixels, away from the signature
    target = np.zeros_like(canvas)
    target[0, 0, :2] = 1.0
    prob = np.zeros_like(canvas)
    prob[0, 0, :3] = 0.9  # keeps the signature and its edge (which counts for neither)
    prob[0, 3, 3] = 0.9  # and one clutter pixel
    prob[0, 2, 0] = 0.9  # paper: does not count
    m = ink_f1(prob, target, canvas)
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(2 / 3) and m["clutter_kept"] == 0.5
    assert ink_f1(prob, target, canvas, threshold=0.95)["recall"] == 0.0


def test_pasting_a_pool_signature_draws_nothing_for_ink_warping_when_it_is_off(pair_sources):
    """With --augment-ink 0 a synth draws what it drew before the option existed: the pool
    index, then the pasting, so the shipped cleaner's export pairs stay as they were."""
    from training.cleansynth import KINDS, CleanerSynth

    _, pool, sources = pair_sources
    assert len(pool.inks) > 1  # so that the pool index is a real draw
    drawn = CleanerSynth(pool, sources, seed=3, augment_ink=0.0)
    given = CleanerSynth(pool, sources, seed=3)
    for kind in KINDS:
        crop, target, _ = drawn.crop(kind)
        index = given.rng.integers(len(pool.inks))  # the pool index the first synth drew
        expected, expected_target, _ = given.crop(kind, ink=pool.inks[index])
        assert np.array_equal(crop, expected) and np.array_equal(target, expected_target)


@pytest.mark.slow
def test_cleaner_trains_exports_and_runs_in_the_pipeline(pair_sources, tmp_path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from export.export_cleaner import export
    from sigedge.bundle import ModelBundle
    from sigedge.clean import CleanOptions
    from sigedge.pipeline import Pipeline, PipelineOptions
    from training.docsynth import font_files, renderer_provenance
    from training.train_cleaner import main as train_main

    data, _, _ = pair_sources
    run = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"), "--epochs", "1",
                "--qat-epochs", "1", "--steps", "2", "--batch", "4", "--limit", "12", "--val-pairs", "8",
                "--synthetic-signatures", "3", "--augment-ink", "0.5", "--gate-writers", "0.5"])
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done" and [h["phase"] for h in state["history"]] == ["float", "qat"]
    assert {"f1", "precision", "recall", "clutter_kept"} <= set(state["history"][0])

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    for f in bundle.glob("cleaner*.tflite"):  # start from a bundle without a cleaner
        f.unlink()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"] = {r: m for r, m in manifest["models"].items() if not r.startswith("cleaner")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    cleaning = export(run, bundle, data_root=data, cache=tmp_path / "cache")
    assert set(cleaning["report"]) == {"cleaner", "cleaner_float"}
    # the host's fonts drew the clutter, named in the manifest on disk
    written = json.loads((bundle / "manifest.json").read_text())["cleaning"]["generated_pages"]
    assert written == cleaning["generated_pages"] == renderer_provenance()
    assert len(written["fonts"]) == len(font_files()) == len(written["font_sha256"])
    loaded = ModelBundle.load(bundle)  # the hashes match the files
    spec = loaded.model("cleaner")
    assert spec.precision == "int8" and (spec.input_height, spec.input_width) == (128, 256)
    assert 0.0 < spec.raw["cleaning"]["threshold"] < 1.0
    assert "detector" in loaded.models  # the other models are left as they were
    from export.fit_cleaner_gate import GATE_GRID
    from export.fit_cleaner_gate import fit as fit_gate

    assert cleaning["training"]["gate_writers"] == 0.5 and cleaning["training"]["gate_writers_held_out"] >= 2
    for flag in ("--gate-writers 0.5", "--val-pairs 8", "--limit 12", "--synthetic-signatures 3"):
        assert flag in cleaning["training"]["command"]
    assert set(cleaning["training"]["weights_sha256"]) >= {"float.h5", "qat.h5"}
    assert "held out" in cleaning["threshold_chosen_on"]
    assert "min_removed_share" not in spec.raw["cleaning"]  # the gate is a separate step:
    gate = fit_gate(bundle, data, images=4)
    assert "held out" in gate["chosen_on"]
    loaded = ModelBundle.load(bundle)
    for role in ("cleaner", "cleaner_float"):  # fitted for both precisions
        assert loaded.model(role).raw["cleaning"]["min_removed_share"] in GATE_GRID
        assert gate["roles"][role]["grid"]["0.0"]["cells"]

    pipe = Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="learned")))
    assert pipe.cleaner is not None
    image = synthetic_signature(3, 1)
    cleaned = pipe._cleaned(image)
    assert cleaned.shape == image.shape[:2] and cleaned.dtype == np.uint8


def test_gate_is_the_one_whose_cleaned_crops_embed_closest():
    from export.fit_cleaner_gate import choose_gate

    rows = []
    for k in range(10):  # clean scans: the cleaner removes 1-3 % and costs cosine
        rows.append({"collection": "ssbi", "kind": "original", "removed": 0.01 + 0.002 * k, "classic": 1.0,
                     "learned": 0.9})
    for k in range(10):  # cluttered crops: it removes 12-50 % and gains
        rows.append({"collection": "ssbi", "kind": "page", "removed": 0.12 + 0.04 * k, "classic": 0.4,
                     "learned": 0.7})
    gate, table = choose_gate(rows)
    assert gate == 0.05  # the smallest gate that spares every clean scan and keeps every cluttered crop
    assert table["0.05"]["cells"]["ssbi/original"]["learned_applied"] == 0.0
    assert table["0.05"]["cells"]["ssbi/page"]["learned_applied"] == 1.0
    assert table["0.05"]["mean_cosine"] > table["0.0"]["mean_cosine"] > table["0.3"]["mean_cosine"] - 1
    assert choose_gate([])[0] == 0.0


def test_gate_writers_are_training_writers_the_pool_never_sees(tmp_path):
    from training import data as D
    from training.train_cleaner import gate_writers

    data = make_fake_data_root(tmp_path / "data", writers=8, genuine=1, forgeries=0)
    samples = D.load_all(data)
    train, val = D.split_writers(samples)
    held = gate_writers(samples, train, 0.25)
    assert held and held <= train and not held & val
    assert gate_writers(samples, train, 0.25) == held  # seeded
    for name in ("sigcomp2011_dutch", "ssbi"):  # a share of each collection, no cross-media writer
        mine = {w for w in train if w.startswith(name + ":")}
        assert len(held & mine) == round(0.25 * len(mine))
    assert not any(w.startswith("cross_media") or w.startswith("e0") for w in held)
    assert gate_writers(samples, train, 0.0) == set()


def test_pool_extras_warp_and_synthesise_ink(tmp_path):
    from training.cleansynth import warp_ink
    from training.train_cleaner import synthetic_pool

    inks = synthetic_pool(3, 1, tmp_path)
    assert len(inks) == 3 and all(i.dtype == np.uint8 and i.max() > 100 for i in inks)
    assert all(i[0].max() > 20 or i[:, 0].max() > 20 for i in inks)  # cropped to their ink
    again = synthetic_pool(3, 1, tmp_path)  # cached
    assert all(np.array_equal(a, b) for a, b in zip(inks, again))
    warped = warp_ink(inks[0], np.random.default_rng(0))
    assert warped.dtype == np.uint8 and warped.max() > 100 and warped.shape != inks[0].shape
