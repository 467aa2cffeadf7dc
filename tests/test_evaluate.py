import numpy as np
import pytest

from sigedge.evaluate import bootstrap_difference, bootstrap_over_writers, protocol_scores, report_from_scores

#: Writer a's genuines point along x, b's along y (as enrolled).
ENROLLED = np.array([[1, 0]] * 4 + [[0, 1]] * 4, np.float32)
WRITERS = ["a"] * 4 + ["b"] * 4
KINDS = ["genuine"] * 8


def test_protocol_scores_genuines_and_random_impostors():
    scores = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0)
    assert scores.writers == 2 and len(scores.skilled) == 0
    assert len(scores.genuine) == 4  # 2 per writer after drawing 2 references
    assert len(scores.random) == 8  # every genuine of the other writer
    assert np.allclose(scores.genuine, 1.0) and np.allclose(scores.random, 0.0)


def test_query_embeddings_are_scored_against_references_from_the_enrolled_ones():
    queries = ENROLLED.copy()
    queries[3] = (0.6, 0.8)  # one of a's signatures, captured differently
    scores = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0, query_embeddings=queries)
    assert max(scores.random) == pytest.approx(0.8)  # row 3 as an impostor of b, scored as captured
    same = protocol_scores(ENROLLED, WRITERS, KINDS, references=2, seed=0)
    assert max(same.random) == pytest.approx(0.0)


def _two_kinds_of_writers() -> tuple[np.ndarray, list[str], list[str]]:
    """Six writers: three whose forgeries look like them (hard), three whose do not (easy)."""
    rng = np.random.default_rng(3)
    rows, writers, kinds = [], [], []
    for k in range(6):
        centre = np.eye(6, dtype=np.float32)[k]
        for _ in range(6):
            rows.append(centre + 0.05 * rng.normal(size=6))
            writers.append(f"w{k}"), kinds.append("genuine")
        for _ in range(3):
            away = centre if k < 3 else np.roll(centre, 1)  # a hard writer's forgeries sit on its genuines
            rows.append(away + 0.05 * rng.normal(size=6))
            writers.append(f"w{k}"), kinds.append("forgery")
    emb = np.array(rows, np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), writers, kinds


def test_scores_record_the_writer_they_were_claimed_against():
    emb, writers, kinds = _two_kinds_of_writers()
    ps = protocol_scores(emb, writers, kinds, references=3, seed=0)
    assert ps.writers == 6
    assert np.bincount(ps.genuine_claimed).tolist() == [3] * 6  # 6 genuines - 3 references
    assert np.bincount(ps.skilled_claimed).tolist() == [3] * 6
    assert np.bincount(ps.random_claimed).tolist() == [30] * 6  # every other writer's 6 genuines


def test_random_trials_are_grouped_by_the_writer_claimed_not_the_writer_who_wrote():
    # writers with 4, 6 and 8 genuines: the trials claimed against a writer are every *other*
    # writer's genuines (14, 12, 10), not that writer's genuines against the others (8, 12, 16)
    counts = {"a": 4, "b": 6, "c": 8}
    writers = [w for w, n in counts.items() for _ in range(n)]
    emb = np.eye(3, dtype=np.float32)[[ord(w) - ord("a") for w in writers]]
    ps = protocol_scores(emb, writers, ["genuine"] * len(writers), references=3, seed=0)
    assert np.bincount(ps.random_claimed).tolist() == [14, 12, 10]
    assert np.bincount(ps.genuine_claimed).tolist() == [1, 3, 5]


def test_bootstrap_over_writers_spans_the_writers_spread_and_is_seeded():
    emb, writers, kinds = _two_kinds_of_writers()
    ps = protocol_scores(emb, writers, kinds, references=3, seed=0)
    full = report_from_scores(ps, 3)
    b = bootstrap_over_writers(ps, resamples=300, seed=1)
    lo, hi = b["eer_skilled_interval"]
    assert lo <= full.eer_skilled <= hi and hi - lo > 0.2  # half the writers are hard: a wide interval
    assert b["eer_random_interval"] == (0.0, 0.0)  # no writer is confused with another
    assert b == bootstrap_over_writers(ps, resamples=300, seed=1)
    other = bootstrap_over_writers(ps, resamples=300, seed=2)
    assert b["eer_skilled_interval"] != other["eer_skilled_interval"]
    # one kind of writer only: nothing to resample, the interval is the point
    easy = [k for k, w in enumerate(writers) if int(w[1]) >= 3]
    ps_easy = protocol_scores(emb[easy], [writers[k] for k in easy], [kinds[k] for k in easy], references=3)
    assert bootstrap_over_writers(ps_easy, resamples=50)["eer_skilled_interval"] == (0.0, 0.0)


def test_bootstrap_over_writers_counts_resamples_without_skilled_trials():
    emb, writers, _ = _two_kinds_of_writers()
    ps = protocol_scores(emb, writers, ["genuine"] * len(writers), references=3)  # no forgeries at all
    b = bootstrap_over_writers(ps, resamples=20)
    assert b["eer_skilled_interval"] is None and b["eer_skilled_skipped"] == 20
    with pytest.raises(ValueError):
        bootstrap_over_writers(ps, resamples=0)


def test_bootstrap_over_folds_resamples_within_each_fold_and_intervals_the_mean():
    emb, writers, kinds = _two_kinds_of_writers()
    hard = [k for k, w in enumerate(writers) if int(w[1]) < 3]
    easy = [k for k, w in enumerate(writers) if int(w[1]) >= 3]
    folds = [protocol_scores(emb[rows], [writers[k] for k in rows], [kinds[k] for k in rows], references=3)
             for rows in (hard, easy)]
    assert bootstrap_over_writers([folds[0]], resamples=60, seed=4) == bootstrap_over_writers(folds[0], 60, 4)
    eers = [report_from_scores(ps, 3).eer_skilled for ps in folds]
    assert eers[1] == 0.0 and eers[0] > 0.2
    b = bootstrap_over_writers(folds, resamples=200, seed=0)
    assert b["folds"] == 2
    lo, hi = b["eer_skilled_interval"]
    # the easy fold always contributes 0, so the mean's interval is half the hard fold's
    alone = bootstrap_over_writers(folds[0], resamples=200, seed=0)["eer_skilled_interval"]
    assert lo <= np.mean(eers) <= hi and hi <= alone[1] / 2 + 1e-12
    with pytest.raises(ValueError):
        bootstrap_over_writers([], resamples=10)


def test_bootstrap_difference_is_paired_and_signed():
    emb, writers, kinds = _two_kinds_of_writers()
    sharp = protocol_scores(emb, writers, kinds, references=3, seed=0)
    # the same trials scored worse: every skilled forgery a little closer to its writer
    blurred = protocol_scores(emb, writers, kinds, references=3, seed=0)
    blurred.skilled = blurred.skilled + 0.3
    d = bootstrap_difference([sharp], [blurred], resamples=200, seed=0)
    lo, hi = d["difference_skilled_interval"]
    assert hi <= 0 and lo < 0 and d["share_better_skilled"] > 0.8  # ties: resamples of easy writers only
    assert d["difference_random_interval"] == (0.0, 0.0)  # random trials scored alike
    same = bootstrap_difference([sharp], [sharp], resamples=50)
    assert same["difference_skilled_interval"] == (0.0, 0.0) and same["share_better_skilled"] == 0.0
    other = protocol_scores(emb[:-9], writers[:-9], kinds[:-9], references=3, seed=0)
    with pytest.raises(ValueError):
        bootstrap_difference([sharp], [other])
    with pytest.raises(ValueError):
        bootstrap_difference([sharp, sharp], [sharp])
