"""A few-step training run on generated data, QAT, int8 export, and the runtime loading it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.helpers import make_fake_data_root

pytestmark = [pytest.mark.train, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from training.train_embedder import main as train_main

    tmp = tmp_path_factory.mktemp("train")
    data = make_fake_data_root(tmp / "data")
    run = tmp / "run"
    train_main(["--data", str(data), "--out", str(run), "--cache", str(tmp / "cache"), "--epochs", "1",
                "--qat-epochs", "1", "--steps", "2", "--batch", "8", "--height", "64", "--width", "128",
                "--dim", "32", "--qat-freeze-bn"])
    return data, run, tmp


TINY = ["--steps", "1", "--batch", "8", "--height", "64", "--width", "128", "--dim", "32"]


def test_training_writes_checkpoints_and_history(trained_run):
    _, run, _ = trained_run
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done"
    assert [h["phase"] for h in state["history"]] == ["float", "qat"]
    assert (run / "float.h5").stat().st_size > 0 and (run / "qat.h5").stat().st_size > 0


def test_export_int8_bundle_runs_in_the_runtime(trained_run):
    from export.export_embedder import export
    from sigedge import Pipeline
    from sigedge.bundle import ModelBundle
    from sigedge.synth import synthetic_signature

    data, run, tmp = trained_run
    out = tmp / "bundle"
    manifest = export(run, out, int8=True, data_root=data, cache=tmp / "cache")
    assert manifest["models"]["embedder"]["precision"] == "int8"
    b = ModelBundle.load(out)
    assert (b.model("embedder").input_height, b.model("embedder").input_width) == (64, 128)
    assert set(manifest["verification"]["thresholds"]) >= {"eer_skilled", "far_random_1pct"}
    e = Pipeline(out).embed(synthetic_signature(1, 0))
    assert e.shape == (32,) and np.isfinite(e).all()
    assert "sigcomp2011_dutch" in manifest["parity"]
    # what the bytes came from: the run's weights and the converter's release
    from sigedge.bundle import sha256_file
    assert manifest["training"]["weights_sha256"]["qat.h5"] == sha256_file(run / "qat.h5")
    assert manifest["training"]["converted_with"]["tensorflow"][0].isdigit()


def test_synthetic_pretraining_then_fine_tuning_from_it(trained_run, tmp_path, caplog):
    from training.train_embedder import main as train_main

    data, _, _ = trained_run
    common = ["--data", str(data), "--cache", str(tmp_path / "cache"), *TINY]
    pre = tmp_path / "pre"
    train_main([*common, "--out", str(pre), "--synthetic", "6", "--epochs", "1", "--qat-epochs", "0",
                "--pair-writers", "2", "--batch", "16"])
    state = json.loads((pre / "state.json").read_text())
    assert state["phase"] == "done" and state["config"]["synthetic"] == "6"
    assert list((tmp_path / "cache").glob("synthetic_*.npz"))
    caplog.set_level("INFO", logger="train_embedder")
    train_main([*common, "--out", str(tmp_path / "ft"), "--init", str(pre / "float.h5"), "--epochs", "1",
                "--qat-epochs", "0"])
    assert any("starts from" in r.getMessage() and "pre" in r.getMessage() for r in caplog.records)


def test_synthetic_signers_mixed_into_real_training(trained_run, tmp_path):
    """--synthetic-mix: procedural signers' genuines and forgeries become extra classes, and
    their genuine/forgery blocks join the real writers' in the ranking loss."""
    from training.train_embedder import BatchMaker
    from training.train_embedder import main as train_main

    data, run, _ = trained_run
    out = tmp_path / "mix"
    train_main(["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out), *TINY, "--batch", "16",
                "--epochs", "1", "--qat-epochs", "0", "--pair-writers", "1", "--synthetic-mix", "5",
                "--synthetic-pair-writers", "1"])
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == "done" and state["config"]["synthetic_mix"] == "5"
    real_classes = np.load(run / "head.npy").shape[-1]
    assert np.load(out / "head.npy").shape[-1] == real_classes + 10  # each signer: genuines, forgeries

    # a batch: the real pool's block first, then the second pool's, then weighted draws
    canv = np.zeros((30, 8, 16), np.uint8)
    real = {0: (np.arange(0, 5), np.arange(5, 8))}
    synth = {k: (np.arange(10 + 5 * k, 13 + 5 * k), np.arange(13 + 5 * k, 15 + 5 * k)) for k in range(4)}
    maker = BatchMaker(canv, np.arange(30), np.ones(30), 24, (8, 16), seed=0, pair_pools=[(real, 1), (synth, 2)])
    try:
        idx, group, forged = maker._indices()
    finally:
        maker.close()
    assert list(group[:18]) == [0] * 6 + [1] * 6 + [2] * 6 and (group[18:] == -1).all()
    assert (idx[:6] < 8).all() and (idx[6:18] >= 10).all()
    assert list(forged[:6]) == [0, 0, 0, 0, 1, 1]
    with pytest.raises(SystemExit):
        train_main(["--data", str(data), "--out", str(tmp_path / "x"), *TINY, "--synthetic-mix", "5", "--synthetic",
                    "5"])


def test_same_name_blocks_pit_a_writers_name_against_other_writers_writing_it(trained_run, tmp_path):
    """--name-pair-writers: a cross-media identity's block holds its own signatures as genuines
    and the same name by *other* training writers as its impostors, never its own writer's."""
    from training import data as D
    from training.train_embedder import main as train_main
    from training.train_embedder import same_name_groups

    data, _, _ = trained_run
    train = D.load_all(data)
    groups = same_name_groups(train)
    assert groups
    for ident, (own, others) in groups.items():
        assert ident.startswith("cross_media_chinese:")
        assert {train[i].identity for i in own} == {ident}
        name = ident.rsplit(":", 1)[1]
        assert all(train[i].identity.endswith(":" + name) for i in others)
        assert all(train[i].writer != train[own[0]].writer for i in others)
    # the other name of the same writer is never an impostor: it is not the same text
    assert len(groups) == len({s.identity for s in train if s.dataset == "cross_media_chinese"})

    out = tmp_path / "names"
    train_main(["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out), *TINY, "--batch", "16",
                "--epochs", "1", "--qat-epochs", "0", "--pair-writers", "1", "--name-pair-writers", "1"])
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == "done" and state["config"]["name_pair_writers"] == "1"
    with pytest.raises(SystemExit):  # three blocks of six do not fit a batch of 16
        train_main(["--data", str(data), "--out", str(tmp_path / "x"), *TINY, "--batch", "16",
                    "--pair-writers", "2", "--name-pair-writers", "1"])


def test_mirrored_writers_are_classes_of_their_own_with_their_forgeries_mirrored_alike(trained_run, tmp_path,
                                                                                        monkeypatch):
    """--mirror-writers: sample i's mirror image k is index i + k*N, a class of its own, and a
    ranking block holds one mirror image of one writer's genuines and forgeries."""
    from training.train_embedder import MIRRORS, BatchMaker, mirror_identities, mirrored
    from training.train_embedder import main as train_main

    labels, weights = np.array([0, 0, 1, 1, 1]), np.array([1.0, 1.0, 2.0, 2.0, 2.0])
    groups = {"w": (np.array([2, 3]), np.array([4]))}
    labels4, weights4, (groups4, none) = mirror_identities(labels, weights, [groups, None])
    assert none is None and len(MIRRORS) == 4
    assert list(labels4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7]
    assert np.isclose(weights4.sum(), weights.sum()) and np.allclose(weights4[5:10], weights / 4)
    assert {k: (list(g), list(f)) for k, (g, f) in groups4.items()} == {
        ("w", 0): ([2, 3], [4]), ("w", 1): ([7, 8], [9]), ("w", 2): ([12, 13], [14]), ("w", 3): ([17, 18], [19])}

    canvas = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert mirrored(canvas, 0) is canvas
    assert (mirrored(canvas, 1) == canvas[:, ::-1]).all() and (mirrored(canvas, 2) == canvas[::-1]).all()
    assert (mirrored(canvas, 3) == canvas[::-1, ::-1]).all() and mirrored(canvas, 3).flags["C_CONTIGUOUS"]

    # a batch from the mirrored indices: each sample is its canvas's mirror image, every block
    # within one mirror image (augmentation passed through, lopsided ink on each canvas)
    canv = np.zeros((5, 8, 16), np.uint8)
    for i in range(5):
        canv[i, : i + 2, : 2 * i + 3] = 255
    monkeypatch.setattr("training.train_embedder.augment", lambda img, rng, hw, **kw: img)
    maker = BatchMaker(canv, labels4, weights4, 24, (8, 16), seed=0, pair_pools=[(groups4, 2)])
    try:
        batches = [maker._batch() for _ in range(4)]
    finally:
        maker.close()
    seen = set()
    for x, y, group, forged, idx in batches:
        assert x.shape == (24, 8, 16, 1) and (idx < 20).all() and (y == labels4[idx]).all()
        for j, i in enumerate(idx):
            assert (x[j, ..., 0] * 255 == mirrored(canv[i % 5], i // 5)).all()
            seen.add(i // 5)
        for b in (0, 1):
            assert len(set(idx[group == b] // 5)) == 1
    assert seen == {0, 1, 2, 3}
    monkeypatch.undo()  # training below augments as it does

    data, run, _ = trained_run
    out = tmp_path / "mirror"
    train_main(["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out), *TINY, "--batch", "16",
                "--epochs", "1", "--qat-epochs", "0", "--pair-writers", "1", "--mirror-writers"])
    state = json.loads((out / "state.json").read_text())
    assert state["phase"] == "done" and state["config"]["mirror_writers"] == "True"
    assert np.load(out / "head.npy").shape[-1] == 4 * np.load(run / "head.npy").shape[-1]
    with pytest.raises(SystemExit, match="--mirror-writers"):
        train_main(["--data", str(data), "--out", str(tmp_path / "x"), *TINY, "--mirror-writers", "--synthetic-mix",
                    "5"])
    with pytest.raises(SystemExit, match="--mirror-writers"):  # a resume cannot change what the classes are
        train_main(["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out), *TINY, "--resume"])


def test_partial_view_reaches_every_batch_sample_and_is_checked(tmp_path, monkeypatch):
    """--partial-view: the batch maker hands its chance to each sample's augmentation, and a
    chance outside [0, 1] is refused before any data is read."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from training.train_embedder import BatchMaker
    from training.train_embedder import main as train_main

    seen = []
    monkeypatch.setattr("training.train_embedder.augment",
                        lambda img, rng, hw, **kw: seen.append(kw["partial_view"]) or img)
    canv = np.zeros((3, 8, 16), np.uint8)
    maker = BatchMaker(canv, np.array([0, 1, 2]), np.ones(3), 6, (8, 16), seed=0, partial_view=0.5)
    try:
        maker._batch()
    finally:
        maker.close()
    assert seen[-6:] == [0.5] * 6
    with pytest.raises(SystemExit, match="--partial-view"):
        train_main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "x"), "--partial-view", "1.5"])


def test_signet_baseline_trains_float_and_exports_without_int8(trained_run, tmp_path, monkeypatch, caplog):
    from export.export_embedder import export
    from sigedge import Pipeline
    from sigedge.errors import UsageError
    from sigedge.synth import synthetic_signature
    from training.train_embedder import main as train_main

    data, _, _ = trained_run
    run = tmp_path / "signet"
    with pytest.raises(SystemExit):
        train_main(["--data", str(data), "--out", str(run), "--arch", "signet", "--qat-epochs", "1", *TINY])
    train_main(["--data", str(data), "--out", str(run), "--cache", str(tmp_path / "cache"), "--arch", "signet",
                "--epochs", "1", "--qat-epochs", "0", *TINY])
    assert (run / "float.h5").exists() and not (run / "qat.h5").exists()
    with pytest.raises(UsageError):
        export(run, tmp_path / "b", int8=True, data_root=data, cache=tmp_path / "cache")
    manifest = export(run, tmp_path / "b", int8=False, data_root=data, cache=tmp_path / "cache")
    assert manifest["training"]["architecture"].startswith("SigNet")
    assert "--arch signet" in manifest["training"]["command"]
    assert Pipeline(tmp_path / "b").embed(synthetic_signature(2, 0)).shape == (32,)

    # the float baseline as a teacher the int8 student's similarities follow
    import training.train_embedder as te

    common = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--epochs", "1", "--qat-epochs", "0", *TINY]
    with pytest.raises(SystemExit, match="trained on fold 0, not 1"):
        train_main([*common, "--out", str(tmp_path / "wrong"), "--teacher", str(run), "--fold", "1"])
    calls = []
    real_loss = te.relational_distillation_loss
    monkeypatch.setattr(te, "relational_distillation_loss",
                        lambda e, t: calls.append((e.shape, t.shape)) or real_loss(e, t))
    student = tmp_path / "student"
    train_main([*common, "--out", str(student), "--teacher", str(run), "--dim", "16"])
    state = json.loads((student / "state.json").read_text())
    assert state["phase"] == "done" and state["config"]["teacher"] == str(run)
    # traced into the training step, against the teacher's 32-d embeddings of the batch
    assert calls and calls[0][1].as_list() == [8, 32] and calls[0][0].as_list()[1] == 16
    # a resumed run reuses the stored teacher embeddings and keeps the teacher it started with
    assert (student / "teacher.npz").exists()
    with pytest.raises(SystemExit, match="started with --teacher"):
        train_main([*common, "--out", str(student), "--resume"])
    resumed = [*common, "--out", str(student), "--resume", "--teacher", str(run), "--dim", "16"]
    with pytest.raises(SystemExit, match="started with --distill-weight 1.0"):
        train_main([*resumed, "--distill-weight", "0.5"])
    train_main([*resumed, "--distill-weight", "1"])  # the same weight, written otherwise: accepted


def test_relational_distillation_loss_ignores_dimension_and_scale_only():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from training.train_embedder import relational_distillation_loss

    rng = np.random.default_rng(0)
    student = rng.normal(size=(12, 8)).astype(np.float32)
    # a teacher of another width with the same cosines: nothing to learn
    same = np.hstack([student, student]) * 3.0
    assert float(relational_distillation_loss(student, same)) < 1e-4
    other = rng.normal(size=(12, 20)).astype(np.float32)
    assert float(relational_distillation_loss(student, other)) > 0.5
    # a teacher whose cosines are an affine map of the student's (here 0.2 + 0.8 cos): nothing to learn
    unit = student / np.linalg.norm(student, axis=1, keepdims=True)
    affine = np.hstack([unit * np.sqrt(0.8), np.full((12, 1), np.sqrt(0.2))]).astype(np.float32)
    assert float(relational_distillation_loss(student, affine)) < 1e-4


def test_relational_distillation_loss_moves_only_the_student():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from training.train_embedder import relational_distillation_loss

    rng = np.random.default_rng(1)
    student = tf.Variable(rng.normal(size=(10, 8)).astype(np.float32))
    teacher = tf.Variable(rng.normal(size=(10, 24)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = relational_distillation_loss(student, teacher)
    g_student, g_teacher = tape.gradient(loss, [student, teacher])
    assert g_teacher is None and float(tf.reduce_sum(tf.abs(g_student))) > 0
