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


@pytest.mark.slow
def test_cleaner_trains_exports_and_runs_in_the_pipeline(pair_sources, tmp_path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from export.export_cleaner import export
    from sigedge.bundle import ModelBundle
    from sigedge.clean import CleanOptions
    from sigedge.pipeline import Pipeline, PipelineOptions
    from training.train_cleaner import main as train_main

    data, _, _ = pair_sources
    run = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"), "--epochs", "1",
                "--qat-epochs", "1", "--steps", "2", "--batch", "4", "--limit", "12", "--val-pairs", "8"])
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
    loaded = ModelBundle.load(bundle)  # the hashes match the files
    spec = loaded.model("cleaner")
    assert spec.precision == "int8" and (spec.input_height, spec.input_width) == (128, 256)
    assert 0.0 < spec.raw["cleaning"]["threshold"] < 1.0
    assert "detector" in loaded.models  # the other models are left as they were

    pipe = Pipeline(bundle, PipelineOptions(clean_options=CleanOptions(method="learned")))
    assert pipe.cleaner is not None
    image = synthetic_signature(3, 1)
    cleaned = pipe._cleaned(image)
    assert cleaned.shape == image.shape[:2] and cleaned.dtype == np.uint8
