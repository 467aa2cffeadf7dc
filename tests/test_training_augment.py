"""Pose augmentation: the rotation range is what ``--max-rotation`` says, and nothing else turns lines."""

from __future__ import annotations

import cv2
import numpy as np

from training.augment import DEFAULT_MAX_ROTATION, augment, random_affine


def _line_angle(img: np.ndarray) -> float:
    """Angle (degrees) of the principal axis of the ink."""
    ys, xs = np.nonzero(img > 60)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    pts -= pts.mean(0)
    _, vecs = np.linalg.eigh(pts.T @ pts)
    vx, vy = vecs[:, -1]
    a = np.degrees(np.arctan2(vy, vx))
    return float((a + 90) % 180 - 90)


def _horizontal_line() -> np.ndarray:
    img = np.zeros((200, 400), np.uint8)
    cv2.line(img, (100, 100), (300, 100), 255, 3)
    return img


def test_without_rotation_a_horizontal_line_stays_horizontal():
    # scale and shear keep horizontal lines horizontal; only the rotation turns them
    rng = np.random.default_rng(0)
    angles = [_line_angle(random_affine(_horizontal_line(), rng, max_rotation=0.0)) for _ in range(20)]
    assert max(abs(a) for a in angles) < 1.0


def test_rotation_range_follows_max_rotation():
    def spread(max_rotation: float) -> float:
        rng = np.random.default_rng(1)
        return max(abs(_line_angle(random_affine(_horizontal_line(), rng, max_rotation=max_rotation)))
                   for _ in range(60))

    narrow, wide = spread(DEFAULT_MAX_ROTATION), spread(15.0)
    assert narrow <= DEFAULT_MAX_ROTATION + 1.0
    assert 12.0 < wide <= 16.0


def test_augment_returns_a_model_canvas():
    out = augment(_horizontal_line(), np.random.default_rng(2), (64, 128), max_rotation=15.0)
    assert out.shape == (64, 128) and out.dtype == np.uint8 and out.max() > 0


def test_training_command_records_a_non_default_rotation_range():
    from export.export_embedder import training_command

    base = {"epochs": "35", "seed": "2", "max_rotation": str(DEFAULT_MAX_ROTATION), "qat_freeze_bn": "True",
            "init": "None", "arch": "mobilenetv2"}
    assert "--max-rotation" not in training_command("runs/x", base)
    assert "--qat-freeze-bn" in training_command("runs/x", base)
    assert "--max-rotation 15.0" in training_command("runs/x", {**base, "max_rotation": "15.0"})


def test_training_command_records_the_teacher_of_a_distilled_run():
    from export.export_embedder import training_command

    base = {"epochs": "35", "seed": "2", "teacher": "None", "distill_weight": "1.0"}
    assert "--teacher" not in training_command("runs/x", base) and "--distill" not in training_command("runs/x", base)
    cmd = training_command("runs/x", {**base, "teacher": "runs/signet-fold2", "distill_weight": "2.0"})
    assert "--teacher runs/signet-fold2" in cmd and "--distill-weight 2.0" in cmd


def test_training_command_repeats_every_option_a_run_changed():
    """A flag added to training reaches the model card's command without a list to update."""
    from export.export_embedder import training_command

    base = {"epochs": "35", "qat_epochs": "4", "steps": "100", "batch": "64", "seed": "2", "lr": "0.002",
            "cache": "/tmp/c", "data": "/data", "resume": "True", "fold": "0", "synthetic_mix": "0",
            "name_pair_writers": "0", "writer_fraction": "1.0"}
    cmd = training_command("runs/x", base)
    assert cmd == ("python -m training.train_embedder --out runs/x --epochs 35 --qat-epochs 4 --steps 100 "
                   "--batch 64 --lr 0.002 --seed 2")
    cmd = training_command("runs/x", {**base, "synthetic_mix": "2000", "synthetic_pair_writers": "2",
                                      "name_pair_writers": "2", "writer_fraction": "0.5", "fold": "1"})
    for flag in ("--synthetic-mix 2000", "--synthetic-pair-writers 2", "--name-pair-writers 2",
                 "--writer-fraction 0.5", "--fold 1"):
        assert flag in cmd
