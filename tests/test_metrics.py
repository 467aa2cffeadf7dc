import numpy as np
import pytest

from sigedge.metrics import auc, equal_error_rate, frr_at_far, threshold_at_far


def test_perfect_separation():
    eer, thr = equal_error_rate(np.array([0.8, 0.9, 1.0]), np.array([0.1, 0.2]))
    assert eer == 0.0 and 0.2 < thr <= 0.8
    assert auc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 1.0


def test_gaussian_eer_matches_theory():
    rng = np.random.default_rng(0)
    g, i = rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000)
    eer, _ = equal_error_rate(g, i)
    assert abs(eer - 0.1587) < 0.01  # Phi(-1)
    assert abs(auc(g, i) - 0.9214) < 0.01


def test_auc_equals_pairwise_count():
    rng = np.random.default_rng(1)
    g, i = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in g for b in i])
    assert abs(auc(g, i) - brute) < 1e-12


def test_threshold_at_far_bounds_false_accepts():
    rng = np.random.default_rng(2)
    imp = rng.normal(0, 1, 1000)
    for far in (0.01, 0.1):
        t = threshold_at_far(imp, far)
        assert np.mean(imp >= t) <= far
        assert np.mean(imp >= np.nextafter(t, -np.inf) - 1e-9) >= far - 0.002
    g = rng.normal(2, 1, 1000)
    assert 0 < frr_at_far(g, imp, 0.01) < frr_at_far(g, imp, 0.001) + 1e-9


def test_percentile_interval_is_the_central_share_and_refuses_nothing():
    from sigedge.metrics import percentile_interval

    assert percentile_interval(np.arange(101), 0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError):
        percentile_interval([], 0.95)
