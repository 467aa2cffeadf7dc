"""Retraining commands in bundle manifests: read from each training module's own parser."""

from __future__ import annotations

import json

from export.provenance import training_command
from training.augment import DEFAULT_MAX_ROTATION

EMBEDDER, DETECTOR, CLEANER, RESCORER = (f"training.train_{m}" for m in ("embedder", "detector", "cleaner", "rescorer"))


def test_embedder_command_records_a_non_default_rotation_range():
    base = {"epochs": "35", "seed": "2", "max_rotation": str(DEFAULT_MAX_ROTATION), "qat_freeze_bn": "True",
            "init": "None", "arch": "mobilenetv2"}
    assert "--max-rotation" not in training_command(EMBEDDER, "runs/x", base)
    assert "--qat-freeze-bn" in training_command(EMBEDDER, "runs/x", base)
    assert "--max-rotation 15.0" in training_command(EMBEDDER, "runs/x", {**base, "max_rotation": "15.0"})


def test_embedder_command_records_the_teacher_of_a_distilled_run():
    base = {"epochs": "35", "seed": "2", "teacher": "None", "distill_weight": "1.0"}
    cmd = training_command(EMBEDDER, "runs/x", base)
    assert "--teacher" not in cmd and "--distill" not in cmd
    cmd = training_command(EMBEDDER, "runs/x", {**base, "teacher": "runs/signet-fold2", "distill_weight": "2.0"})
    assert "--teacher runs/signet-fold2" in cmd and "--distill-weight 2.0" in cmd


def test_embedder_command_repeats_every_option_a_run_changed():
    """A flag added to training reaches the model card's command without a list to update."""
    base = {"epochs": "35", "qat_epochs": "4", "steps": "100", "batch": "64", "seed": "2", "lr": "0.002",
            "cache": "/tmp/c", "data": "/data", "resume": "True", "fold": "0", "synthetic_mix": "0",
            "name_pair_writers": "0", "writer_fraction": "1.0", "limit": "0"}
    cmd = training_command(EMBEDDER, "runs/x", base)
    assert cmd == ("python -m training.train_embedder --out runs/x --epochs 35 --qat-epochs 4 --steps 100 "
                   "--batch 64 --lr 0.002 --seed 2")
    cmd = training_command(EMBEDDER, "runs/x", {**base, "synthetic_mix": "2000", "synthetic_pair_writers": "2",
                                                "name_pair_writers": "2", "writer_fraction": "0.5", "fold": "1",
                                                "limit": "40"})
    for flag in ("--synthetic-mix 2000", "--synthetic-pair-writers 2", "--name-pair-writers 2",
                 "--writer-fraction 0.5", "--fold 1", "--limit 40"):  # a smoke run's data limit is what it learned
        assert flag in cmd


def test_detector_command_keeps_crop_and_signature_pool():
    """The hand list this replaced dropped --crop and --signatures."""
    base = {"epochs": "16", "qat_epochs": "3", "steps": "100", "batch": "16", "seed": "4", "lr": "0.0006",
            "alpha": "0.35", "crop": "320", "signatures": "1500", "page_style": "1", "init": "None", "ema": "0.998"}
    cmd = training_command(DETECTOR, "runs/d", base)
    assert cmd == ("python -m training.train_detector --out runs/d --epochs 16 --qat-epochs 3 --steps 100 "
                   "--batch 16 --lr 0.0006 --seed 4 --page-style 1")
    cmd = training_command(DETECTOR, "runs/d", {**base, "crop": "256", "signatures": "500", "alpha": "0.5"})
    for flag in ("--crop 256", "--signatures 500", "--alpha 0.5"):
        assert flag in cmd


def test_cleaner_command_keeps_every_changed_option():
    """The hand list this replaced dropped --signatures, --val-pairs, --lr and --alpha."""
    base = {"epochs": "24", "qat_epochs": "3", "steps": "100", "batch": "32", "seed": "3", "lr": "0.002",
            "alpha": "0.35", "signatures": "3000", "val_pairs": "384", "gate_writers": "0.0"}
    assert "--gate-writers" not in training_command(CLEANER, "runs/c", base)
    cmd = training_command(CLEANER, "runs/c", {**base, "signatures": "800", "val_pairs": "64", "lr": "0.001",
                                               "alpha": "0.5", "gate_writers": "0.25"})
    for flag in ("--signatures 800", "--val-pairs 64", "--lr 0.001", "--alpha 0.5", "--gate-writers 0.25"):
        assert flag in cmd


def test_rescorer_command_records_a_distilled_runs_teachers(tmp_path):
    from export.export_detector import rescorer_command

    (tmp_path / "state.json").write_text(json.dumps({"config": {
        "epochs": "8", "seed": "4", "teacher": "runs/a runs/b", "distill": "0.5", "online": "False"}}))
    command = rescorer_command(tmp_path)
    assert command.startswith(f"python -m training.train_rescorer --out {tmp_path} --epochs 8 --seed 4")
    assert command.endswith("--teacher runs/a --teacher runs/b --distill 0.5")
    (tmp_path / "state.json").write_text(json.dumps({"config": {"epochs": "8", "online": "True", "teacher": ""}}))
    assert rescorer_command(tmp_path) == f"python -m training.train_rescorer --out {tmp_path} --epochs 8 --online"


def test_a_repeatable_option_is_recorded_as_a_list_so_a_path_with_a_space_stays_one_value(tmp_path):
    import shlex

    from export.export_detector import rescorer_command
    from training.common import recorded_options
    from training.train_rescorer import parse_args

    args = parse_args(["--out", str(tmp_path), "--epochs", "8", "--teacher", "runs/my teacher", "--teacher",
                       "runs/b", "--distill", "0.5"])
    cfg = recorded_options(args)
    assert cfg["teacher"] == ["runs/my teacher", "runs/b"] and cfg["epochs"] == "8" and cfg["out"] == str(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"config": cfg}))
    words = shlex.split(rescorer_command(tmp_path))
    assert words[words.index("--teacher"):] == ["--teacher", "runs/my teacher", "--teacher", "runs/b",
                                                "--distill", "0.5"]
    assert parse_args(words[3:]).teacher == args.teacher  # the command parses back to the run's teachers
    cfg = recorded_options(parse_args(["--out", str(tmp_path)]))
    assert cfg["teacher"] == [] and "--teacher" not in training_command(RESCORER, tmp_path, cfg)


def test_an_option_newer_than_the_run_is_left_out():
    # runs recorded before an option existed ran without it; its default today says nothing about them
    cmd = training_command(EMBEDDER, "runs/old", {"epochs": "25", "seed": "1"})
    assert cmd == "python -m training.train_embedder --out runs/old --epochs 25 --seed 1"


def test_values_are_shell_quoted():
    import shlex

    cmd = training_command(EMBEDDER, "runs/my run", {"epochs": "2", "init": "/tmp/a b/float.h5"})
    assert shlex.split(cmd)[3:] == ["--out", "runs/my run", "--epochs", "2", "--init", "/tmp/a b/float.h5"]


def test_a_detector_run_older_than_an_option_is_given_what_it_trained_with():
    from pathlib import Path

    def recorded(run: Path) -> dict[str, str]:
        return json.loads((run / "state.json").read_text())["config"]

    v1 = Path(__file__).resolve().parent.parent / "training" / "checkpoints" / "detector-v1"
    assert "ema" not in recorded(v1) and "page_style" not in recorded(v1)  # it predates both
    cmd = training_command(DETECTOR, "runs/v1", recorded(v1))
    assert "--page-style 1" in cmd and "--ema 0.0" in cmd  # style 1 and no moving average, as it ran
    v2 = recorded(v1.parent / "detector-v2")
    assert v2["ema"] == "0.998" and "--ema" not in training_command(DETECTOR, "runs/v2", v2)  # today's default


def test_the_manifest_objective_names_every_option_that_changes_what_was_learned():
    from pathlib import Path

    from export.export_embedder import objective_description
    from training.common import recorded_options
    from training.train_embedder import parse_args

    root = Path(__file__).resolve().parent.parent
    shipped = json.loads((root / "sigedge" / "models" / "default" / "manifest.json").read_text())
    run = json.loads((root / "training" / "checkpoints" / "embedder-v2" / "state.json").read_text())
    assert objective_description(run["config"]) == shipped["training"]["objective"]

    plain = objective_description(recorded_options(parse_args(["--out", "runs/x"])))
    assert plain == "CosFace (s=30, m=0.35) over identities; forgeries of a writer as their own class"
    for flags, words in [(["--mirror-writers"], "mirror images"), (["--name-pair-writers", "2"], "2 same-name blocks"),
                         (["--synthetic-mix", "50", "--synthetic-pair-writers", "1"], "50 procedural signers"),
                         (["--synthetic", "30"], "over 30 procedural signers"),
                         (["--teacher", "runs/signet-fold2"], "teacher runs/signet-fold2"),
                         (["--pair-writers", "4"], "inside 4 writer blocks")]:
        described = objective_description(recorded_options(parse_args(["--out", "runs/x", *flags])))
        assert words in described, flags
    both = objective_description(recorded_options(parse_args(["--out", "runs/x", "--synthetic-mix", "50",
                                                              "--synthetic-pair-writers", "1"])))
    assert "plus 1 block of procedural genuines" in both
    one = objective_description(recorded_options(parse_args(["--out", "runs/x", "--pair-writers", "1",
                                                             "--name-pair-writers", "1"])))
    assert "inside 1 writer block per batch" in one and "plus 1 same-name block per batch" in one
