"""Writer folds of the training split, and the same-name impostors of the cross-validation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from training import data as D

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def samples(writers: int = 44, per_writer: int = 3) -> list[D.Sample]:
    out = []
    for ds in D.VAL_FRACTION:
        for w in range(writers):
            writer = f"{ds}:{w:03d}"
            out += [D.Sample(Path(f"{writer}_{k}.png"), ds, writer, "genuine", writer) for k in range(per_writer)]
    return out


def test_fold_zero_is_the_shipped_split_and_folds_are_writer_disjoint():
    s = samples()
    assert D.split_writers(s) == D.split_writers(s, fold=0)
    held = []
    for fold in range(4):
        train, val = D.split_writers(s, fold=fold)
        assert not train & val
        assert train | val == {x.writer for x in s}
        held.append({w for w in val if w.startswith("sigcomp2011_dutch")})
        assert len(held[-1]) == 11
    # four folds of a quarter each: every sigcomp writer is held out exactly once
    assert set().union(*held) == {x.writer for x in s if x.dataset == "sigcomp2011_dutch"}
    assert sum(len(h) for h in held) == 44


def test_negative_fold_is_refused():
    with pytest.raises(ValueError):
        D.split_writers(samples(), fold=-1)


def test_writer_subsets_are_nested_per_collection_and_inside_the_training_writers():
    s = samples()
    train, val = D.split_writers(s)
    half = D.subsample_writers(s, train, 0.5)
    quarter = D.subsample_writers(s, train, 0.25)
    assert quarter < half < train
    assert D.subsample_writers(s, train, 1.0) == train
    assert D.split_writers(s, train_fraction=0.5) == (half, val)
    for ds in D.VAL_FRACTION:
        n = sum(w.startswith(ds) for w in train)
        assert sum(w.startswith(ds) for w in half) == round(0.5 * n)
    # never fewer than two writers of a collection, so its impostor pairs exist
    assert all(sum(w.startswith(ds) for w in D.subsample_writers(s, train, 0.01)) == 2 for ds in D.VAL_FRACTION)
    with pytest.raises(ValueError):
        D.subsample_writers(s, train, 0.0)


def test_same_name_impostors_pair_each_identity_with_other_writers_of_its_name():
    from crossval import same_name_impostors

    ids = ["a:n01", "a:n01", "b:n01", "a:n02", "b:n02", "c:n02"]
    rows, claimed, kinds = same_name_impostors(ids)
    pairs = sorted(zip(rows, claimed))
    # (a, n01) is imitated by b's n01 (row 2); (b, n01) by a's two n01 rows
    assert (2, "a:n01") in pairs and (0, "b:n01") in pairs and (1, "b:n01") in pairs
    assert all(ids[r] != c and ids[r].split(":")[1] == c.split(":")[1] for r, c in pairs)
    assert len(pairs) == 3 + 6  # n01: 1 + 2; n02: 3 identities x 2 others
    assert set(kinds) == {"forgery"}


def test_fused_rows_score_the_mean_of_both_cosines():
    import numpy as np
    from crossval import fused

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    b = rng.normal(size=(5, 3))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    f = fused(a, b)
    np.testing.assert_allclose(f @ f.T, (a @ a.T + b @ b.T) / 2, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0)


def _fold(k: int, methods: dict[str, float]) -> dict:
    """A crossval fold record with the given skilled EER per method."""
    report = {m: {"eer_skilled": e, "eer_random": e / 2, "frr_at_far1_skilled": 0.5} for m, e in methods.items()}
    cm = {m: {"eer_random": 0.1, "eer_same_name": 0.2} for m in methods}
    cost = {m: {"model_bytes": 1000 * (i + 1), "latency_ms_p50": float(i)} for i, m in enumerate(methods)}
    return {"fold": k, "sigcomp2011_dutch": report, "cross_media_chinese": cm, "cost": cost}


def test_crossval_summary_averages_a_baseline_only_over_its_folds():
    from crossval import method_names, summary

    base = {"int8": 0.2, "float": 0.2, "hog": 0.3, "int8+hog": 0.25}
    folds = [_fold(0, {**base, "signet": 0.4}), _fold(1, {**base, "int8": 0.3})]
    assert method_names(folds) == ["int8", "float", "hog", "int8+hog", "signet"]
    res = summary(folds)
    assert res["int8"]["folds"] == [0, 1] and abs(res["int8"]["sigcomp_eer_skilled"] - 0.25) < 1e-12
    assert res["signet"]["folds"] == [0] and abs(res["signet"]["sigcomp_eer_skilled"] - 0.4) < 1e-12
    assert res["signet"]["model_bytes"] == 5000


def test_crossval_summary_takes_a_fold_scored_for_hog_and_baselines_only():
    from crossval import method_names, summary

    base = {"int8": 0.2, "float": 0.2, "hog": 0.3, "int8+hog": 0.25}
    folds = [_fold(0, {**base, "signet": 0.4}), _fold(1, {"hog": 0.5, "signet": 0.3})]
    assert method_names([folds[1]]) == ["hog", "signet"]
    res = summary(folds)
    assert res["int8"]["folds"] == [0] and res["hog"]["folds"] == [0, 1]
    assert res["signet"]["folds"] == [0, 1] and abs(res["signet"]["sigcomp_eer_skilled"] - 0.35) < 1e-12


def test_crossval_baseline_argument():
    import argparse

    from crossval import parse_baseline

    assert parse_baseline("signet:2=runs/s2/bundle") == ("signet", 2, Path("runs/s2/bundle"))
    for bad in ("signet", "int8:0=x", ":0=x", "signet:x=y"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_baseline(bad)


def test_learning_curve_reads_runs_and_refuses_one_of_another_fraction(tmp_path):
    import json

    import learning_curve as lc

    assert lc.parse_run("2:0.5=runs/x") == (2, 0.5, Path("runs/x"), Path("runs/x/bundle"))
    assert lc.parse_run("0:1.0=a@b")[3] == Path("b")
    for bad in ("2=runs/x", "2:0=runs/x", "x:0.5=runs/x", "1:0.5="):
        with pytest.raises(Exception):
            lc.parse_run(bad)
    history = [{"phase": "float", "epoch": e, "sigcomp2011_dutch_eer_skilled": 0.1 * e,
                "cross_media_chinese_eer_skilled": None} for e in (1, 2, 3)]
    history.append({"phase": "qat", "epoch": 1, "sigcomp2011_dutch_eer_skilled": 9.0,
                    "cross_media_chinese_eer_skilled": None})
    (tmp_path / "state.json").write_text(json.dumps(
        {"phase": "done", "history": history, "config": {"fold": "2", "writer_fraction": "0.5"}}))
    summary = lc.history_summary(lc.run_state(tmp_path, 2, 0.5), last=2)
    assert summary["epochs"] == [2, 3]  # float epochs only
    assert summary["sigcomp2011_dutch_eer_skilled"]["mean"] == pytest.approx(0.25)
    assert "cross_media_chinese_eer_skilled" not in summary  # no values, no entry
    with pytest.raises(SystemExit):
        lc.run_state(tmp_path, 2, 1.0)


def test_learning_curve_names_what_a_run_changed_in_the_shipped_recipe():
    import learning_curve as lc

    defaults = {"out": None, "fold": 0, "writer_fraction": 1.0, "epochs": 35, "mirror_writers": False,
                "partial_view": 0.0}
    shipped = {"out": "runs/embedder-v2", "fold": "0", "epochs": "35"}  # older than two options
    curve_point = {"out": "runs/half-fold2", "fold": "2", "writer_fraction": "0.5", "epochs": "35",
                   "mirror_writers": "False", "partial_view": "0.0"}
    assert lc.recipe_changes(curve_point, shipped, defaults) == {}
    assert lc.recipe_changes({**curve_point, "mirror_writers": "True", "partial_view": "0.5"}, shipped, defaults) == {
        "mirror_writers": "True", "partial_view": "0.5"}
    assert lc.recipe_changes({"epochs": "20"}, shipped, defaults) == {"epochs": "20"}
    assert lc.recipe_changes({}, shipped, defaults) is None and lc.recipe_label(None) == "options not recorded"
    assert lc.recipe_label({}) == "shipped" and lc.recipe_label({"seed": "3"}) == "seed=3"


@pytest.mark.train  # reads training.train_embedder's options, which imports TensorFlow
def test_learning_curve_reads_the_committed_curve_points_as_the_shipped_recipe():
    # against the training script's real options, so a default drifting from the code shows
    import json

    import learning_curve as lc

    defaults = lc.training_defaults()
    shipped = json.loads((lc.SHIPPED_RUN / "state.json").read_text())["config"]
    checkpoints = lc.SHIPPED_RUN.parent
    for name in ("embedder-v2-fold0-half", "embedder-v2-fold1", "embedder-v2-fold3-half"):
        cfg = json.loads((checkpoints / name / "state.json").read_text())["config"]
        assert lc.recipe_changes(cfg, shipped, defaults) == {}, name
    mirror = json.loads((checkpoints / "embedder-mirror-fold1" / "state.json").read_text())["config"]
    assert lc.recipe_changes(mirror, shipped, defaults) == {"mirror_writers": "True"}
