"""Procedural signers for pre-training: deterministic, signer-consistent, forgeries off-shape."""

from __future__ import annotations

import cv2
import numpy as np

from training.synthsig import make_synthetic_set, random_signer, render


def _shape(canvas: np.ndarray) -> np.ndarray:
    """A blurred, small, unit-length view of the ink: what 'looks alike' means here."""
    small = cv2.resize(cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), 4), (64, 32), interpolation=cv2.INTER_AREA)
    v = small.ravel() - small.mean()
    return v / (np.linalg.norm(v) + 1e-9)


def test_render_is_deterministic_and_fills_the_canvas():
    a = render(random_signer(np.random.default_rng(5)), np.random.default_rng(7), out_hw=(64, 128))
    b = render(random_signer(np.random.default_rng(5)), np.random.default_rng(7), out_hw=(64, 128))
    assert a.shape == (64, 128) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    ys, xs = np.nonzero(a > 20)
    # fitted like the runtime's canvases: the ink spans most of one side
    assert (xs.max() - xs.min()) > 0.8 * 128 or (ys.max() - ys.min()) > 0.8 * 64


def test_a_signer_resembles_itself_more_than_others_and_forgeries_drift():
    rng = np.random.default_rng(0)
    same, other, forged = [], [], []
    signers = [random_signer(rng) for _ in range(12)]
    views = [[_shape(render(s, rng, out_hw=(96, 192))) for _ in range(3)] for s in signers]
    fakes = [_shape(render(s, rng, forgery=True, out_hw=(96, 192))) for s in signers]
    for i, v in enumerate(views):
        same.append(float(v[0] @ v[1]))
        other.append(float(v[0] @ views[(i + 1) % len(views)][0]))
        forged.append(float(v[2] @ fakes[i]))
    assert np.mean(same) > np.mean(forged) > np.mean(other)


def test_synthetic_set_labels_groups_and_cache(tmp_path):
    s = make_synthetic_set(4, genuine=3, forgeries=2, seed=1, out_hw=(48, 96), cache_dir=tmp_path)
    assert s.canvases.shape == (20, 48, 96)
    assert s.labels().tolist()[:5] == [0, 0, 0, 1, 1]  # a signer's forgeries are a class of their own
    assert sorted(s.groups()) == [0, 1, 2, 3]
    gen, forg = s.groups()[2]
    assert not s.forged[gen].any() and s.forged[forg].all()
    again = make_synthetic_set(4, genuine=3, forgeries=2, seed=1, out_hw=(48, 96), cache_dir=tmp_path)
    assert np.array_equal(again.canvases, s.canvases)
    assert len(list(tmp_path.glob("synthetic_*.npz"))) == 1
