"""A few-step detector training run on generated pages, QAT, int8 export into a bundle, runtime use."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sigedge.bundle import default_bundle_dir, sha256_file
from tests.helpers import make_fake_data_root, write_png

pytestmark = [pytest.mark.train, pytest.mark.slow]


def make_fake_documents(root, pool, pages: int = 10):
    """A YOLO folder like documents_tobacco800, of generated pages."""
    from training.docsynth import PageSynth

    synth = PageSynth(pool, seed=5)
    folder = root / "documents_tobacco800"
    for i in range(pages):
        page, boxes = synth.page(640, p_empty=0.2)
        name = f"doc{i:02d}-page1_jpg.rf.{i:04x}"
        write_png(folder / "images" / f"{name}.png", page)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        lines = [f"0 {(b[0] + b[2]) / 1280:.5f} {(b[1] + b[3]) / 1280:.5f} {(b[2] - b[0]) / 640:.5f} "
                 f"{(b[3] - b[1]) / 640:.5f}" for b in boxes]
        (folder / "labels" / f"{name}.txt").write_text("\n".join(lines))
    return folder


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from sigedge.imageio import load_image
    from training.docsynth import SignaturePool
    from training.train_detector import main as train_main

    tmp = tmp_path_factory.mktemp("det")
    data = make_fake_data_root(tmp / "data", writers=3, genuine=3, forgeries=1)
    sig_paths = sorted((data / "sigcomp2011_dutch" / "images").rglob("*.png"))
    pool = SignaturePool.from_paths(sig_paths)
    assert all(ink.dtype == np.uint8 and ink.max() > 0 for ink in pool.inks)
    assert load_image(sig_paths[0]) is not None
    make_fake_documents(data, pool)
    run = tmp / "run"
    train_main(["--data", str(data), "--out", str(run), "--cache", str(tmp / "cache"), "--epochs", "1",
                "--qat-epochs", "1", "--steps", "2", "--batch", "4", "--crop", "160", "--synthetic-pages", "4",
                "--signatures", "10"])
    return data, run, tmp


def test_detector_training_writes_checkpoints_and_validation(detector_run):
    _, run, _ = detector_run
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done"
    assert [h["phase"] for h in state["history"]] == ["float", "qat"]
    assert {"map50", "map50_95", "precision", "recall"} <= set(state["history"][0])
    assert (run / "qat.h5").stat().st_size > 0
    assert (run / "float_raw.h5").stat().st_size > 0  # the optimiser's weights, for --resume


def test_weight_average_follows_the_weights_with_its_decay():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras as keras
    from training.train_detector import WeightAverage

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.ones((2, 1), np.float32)])
    average = WeightAverage(model, decay=0.5)
    average.reset(updates=1e6)  # full decay from the first update
    model.set_weights([np.full((2, 1), 3.0, np.float32)])
    tf.function(average.update)()
    np.testing.assert_allclose(average.values()[0], 2.0)  # 0.5 * 1 + 0.5 * 3
    np.testing.assert_allclose(model.get_weights()[0], 3.0)  # the model keeps its own weights
    off = WeightAverage(model, decay=0.0)
    off.update()
    np.testing.assert_allclose(off.values()[0], 3.0)


def test_threshold_is_the_lowest_that_keeps_the_signature_free_pages_empty():
    from export.export_detector import empty_page_pass_rate, empty_page_threshold

    no_box = (np.zeros((0, 4)), np.zeros(0))
    # 20 pages: 18 without any candidate, one with a 0.30 box, one with a 0.62 box
    pages = {f"p{i}": no_box for i in range(18)}
    pages["a"] = (np.zeros((1, 4)), np.array([0.30]))
    pages["b"] = (np.zeros((1, 4)), np.array([0.62]))
    assert empty_page_threshold(pages, target=0.9) == 0.05  # two boxed pages of 20 are allowed
    assert empty_page_threshold(pages, target=0.95) == 0.325  # one: the 0.30 box must fall below
    assert empty_page_pass_rate(pages, 0.325) == 0.95
    assert empty_page_threshold(pages, target=1.0) == 0.625
    assert empty_page_threshold({"x": no_box}, target=1.0) == 0.05


def test_threshold_falls_back_to_the_strictest_with_a_warning(caplog):
    from export.export_detector import THRESHOLD_GRID, empty_page_threshold

    always = {"x": (np.zeros((1, 4)), np.array([0.99]))}  # a box above every grid value
    with caplog.at_level("WARNING", logger="export_detector"):
        assert empty_page_threshold(always, target=1.0) == float(THRESHOLD_GRID[-1])
    assert "no threshold" in caplog.text


@pytest.fixture(scope="module")
def rescorer_run(detector_run):
    from training.train_rescorer import main as train_rescorer

    data, _, tmp = detector_run
    run = tmp / "rescorer"
    train_rescorer(["--data", str(data), "--out", str(run), "--cache", str(tmp / "cache"), "--epochs", "1",
                    "--qat-epochs", "1", "--steps", "3", "--batch", "8", "--synthetic-pages", "2",
                    "--signatures", "10", "--pool-seed", "1", "--jitters", "2",
                    "--ema", "0.9", "--geometric", "0.5", "--label-smoothing", "0.1", "--real-weight", "2"])
    return run


def test_rescorer_training_writes_checkpoints_and_fused_validation(rescorer_run):
    state = json.loads((rescorer_run / "state.json").read_text())
    assert state["phase"] == "done"
    assert [h["phase"] for h in state["history"]] == ["float", "qat"]
    assert all(0.0 <= h["map50"] <= 1.0 for h in state["history"])
    assert (rescorer_run / "float.h5").is_file() and (rescorer_run / "qat.h5").is_file()
    assert (rescorer_run / "float_raw.h5").is_file()  # --ema keeps the raw weights for resuming
    with np.load(rescorer_run / "examples.npz") as z:
        assert z["x"].shape[1:] == (64, 160, 1) and set(np.unique(z["y"])) <= {0.0, 1.0}
        assert 0 < z["y"].sum() < len(z["y"])  # both classes
        assert 0 < z["real"].sum() < len(z["real"])  # real and generated pages both gave crops


def test_reshape_crop_keeps_the_crop_contract_and_varies():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from training.train_rescorer import HEIGHT, WIDTH, reshape_crop

    crop = np.zeros((HEIGHT, WIDTH), np.float32)
    crop[20:44, 30:130] = 1.0
    rng = np.random.default_rng(0)
    outs = [reshape_crop(crop, rng) for _ in range(8)]
    assert all(o.shape == crop.shape and o.dtype == np.float32 and o.flags.c_contiguous for o in outs)
    assert all(0.0 <= o.min() and o.max() <= 1.0 and o.sum() > 0.5 * crop.sum() for o in outs)  # ink stays in
    assert len({o.tobytes() for o in outs}) == 8
    again = reshape_crop(crop, np.random.default_rng(0))
    assert np.array_equal(again, outs[0])  # seeded


def test_detector_export_adds_to_a_bundle_and_fuses_rescorer_scores_in_the_runtime(detector_run, rescorer_run):
    from export.export_detector import export
    from sigedge import Pipeline, PipelineOptions
    from sigedge.bundle import ModelBundle
    from sigedge.detect import DetectOptions, rescorer_input, suppress_overlapping
    from sigedge.interpreter import TFLiteModel
    from training.docsynth import font_files

    data, run, tmp = detector_run
    bundle = tmp / "bundle-rescored"
    shutil.copytree(default_bundle_dir(), bundle)
    for old in [*bundle.glob("detector*.tflite"), *bundle.glob("rescorer*.tflite")]:
        old.unlink()
    before = json.loads((bundle / "manifest.json").read_text())
    # the same run twice: an ensemble of two (identical) members exercises the plumbing
    report = export(run, bundle, data_root=data, cache=tmp / "cache", negative_pages=2,
                    rescorer_runs=[rescorer_run, rescorer_run])
    b = ModelBundle.load(bundle)  # every sha256 checked, the rescorers' too
    assert b.model("detector").precision == "int8"
    assert b.models["embedder"].sha256 == before["models"]["embedder"]["sha256"]  # embedder untouched
    assert b.model("detector").raw["decoding"]["stride"] == 8
    assert {"map50", "map50_95"} <= set(report["report"]["detector"]["validation"])
    # the export host's fonts drew the signature-free pages, named in the manifest on disk
    written = json.loads((bundle / "manifest.json").read_text())["detection"]["generated_pages"]
    assert written["fonts"] == [Path(f).name for f in font_files()] == sorted(written["font_sha256"])
    assert written == report["generated_pages"] and written["opencv"] and written["freetype"]
    assert b.model("detector").raw["rescoring"]["models"] == ["rescorer", "rescorer_2"]
    assert b.model("detector_float").raw["rescoring"]["models"] == ["rescorer_float", "rescorer_2_float"]
    assert b.model("rescorer").precision == "int8" and b.model("rescorer").raw["output"]["kind"] == "logit"
    assert b.model("rescorer_2").file.name == "rescorer_2_int8.tflite"
    assert b.model("rescorer_2_float").precision == "float32"
    assert report["rescorer"]["training"]["command"].count("train_rescorer") == 2
    assert set(report["training"]["converted_with"]) == {"tensorflow", "tf-keras", "tensorflow-model-optimization"}
    rescorer_training = report["rescorer"]["training"]
    assert [m["qat.h5"] for m in rescorer_training["weights_sha256"]] == [sha256_file(rescorer_run / "qat.h5")] * 2
    assert rescorer_training["converted_with"] == report["training"]["converted_with"]
    assert "--crop 160" in report["training"]["command"] and "--signatures 10" in report["training"]["command"]
    assert {"detector", "detector_float"} <= set(report["rescorer"]["report"])
    page = cv2.imread(str(next((data / "documents_tobacco800" / "images").glob("*.png"))), cv2.IMREAD_GRAYSCALE)

    pipe = Pipeline(bundle)
    det = pipe.detector
    assert det.rescores
    rescoring = b.model("detector").raw["rescoring"]
    canvas, boxes, scores, _ = det.candidates(page, 0.0)
    boxes, scores = boxes[: rescoring["max_candidates"]], scores[: rescoring["max_candidates"]]
    members = [TFLiteModel(b.model(r).file) for r in rescoring["models"]]
    crops = [rescorer_input(canvas, tuple(bx), 64, 160, rescoring["context"])[..., None] for bx in boxes]
    p = np.array([1 / (1 + np.exp(-np.mean([m(c)[0] for m in members]))) for c in crops])
    fused = np.sqrt(scores * p)
    order = suppress_overlapping(boxes, [int(i) for i in np.argsort(-fused, kind="stable")], rescoring["max_overlap"])
    expected = fused[order]
    found = pipe.detect(page, score_threshold=0.0)
    assert [d.score for d in found] == pytest.approx(list(expected), rel=1e-4, abs=1e-6)
    assert all(0 <= d.box[0] <= d.box[2] <= page.shape[1] and 0 <= d.box[1] <= d.box[3] <= page.shape[0]
               for d in found)

    plain = Pipeline(bundle, PipelineOptions(detect_options=DetectOptions(rescore=False))).detector
    assert not plain.rescores
    assert plain.score_threshold == b.model("detector").raw["decoding"]["score_threshold"]
    assert det.score_threshold == b.model("detector").raw["rescoring"]["score_threshold"]


def test_online_rescorer_batches_cut_fresh_crops_from_stored_pages(detector_run):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from sigedge.bundle import ModelBundle
    from sigedge.detect import Detector
    from training import detector_data as DD
    from training.train_rescorer import OnlineCrops, build_page_dataset

    data, _, _ = detector_run
    names = sorted(p.name for p in (data / "documents_tobacco800" / "images").glob("*.png"))[:3]
    pages = DD.load_pages(data, names)
    detector = Detector(ModelBundle.load().model("detector"), options=None)
    d = build_page_dataset(pages, detector, seed=0)
    assert d["canvases"].shape == (3, 640, 640) and d["canvases"].dtype == np.uint8
    assert len(d["page"]) == len(d["boxes"]) == len(d["y"]) > 0
    assert d["y"].sum() >= sum(len(gt) for _, gt in pages)  # every true box is a positive
    maker = OnlineCrops(d, batch=8, seed=0)
    try:
        x1, y1 = maker.next()
        x2, _ = maker.next()
    finally:
        maker.close()
    assert x1.shape == (8, 64, 160, 1) and x1.dtype == np.float32 and set(np.unique(y1)) <= {0.0, 1.0}
    assert 0.0 <= x1.min() and x1.max() <= 1.0 and not np.array_equal(x1, x2)


def test_teacher_probabilities_are_the_sigmoid_of_the_teachers_mean_logit(tmp_path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from training.train_rescorer import HEIGHT, WIDTH, build_rescorer, teacher_probabilities

    x = np.random.default_rng(0).random((5, HEIGHT, WIDTH, 1)).astype(np.float32)
    logits = []
    for k in range(2):
        keras.utils.set_random_seed(k)
        teacher = tfmot.quantization.keras.quantize_model(build_rescorer())
        (tmp_path / f"t{k}").mkdir()
        teacher.save_weights(tmp_path / f"t{k}" / "qat.h5")
        logits.append(teacher(x, training=False).numpy().reshape(-1))
    p = teacher_probabilities([tmp_path / "t0", tmp_path / "t1"], x, batch=2)  # batches that split the crops
    assert p == pytest.approx(1 / (1 + np.exp(-(logits[0] + logits[1]) / 2)), rel=1e-4, abs=1e-6)
