"""Quantisation of model inputs and outputs (sigedge.interpreter)."""

from __future__ import annotations

import numpy as np
import pytest

from sigedge.interpreter import _dequantize, _Quant, _quantize


@pytest.mark.parametrize("dtype, zero_point", [(np.int8, -128), (np.uint8, 0), (np.int16, 0)])
def test_quantize_is_round_half_even_of_x_over_scale_plus_zero_point_clipped(dtype, zero_point):
    q = _Quant(scale=0.0039215689, zero_point=zero_point, dtype=dtype)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random(5000, dtype=np.float32) * 3 - 1,  # out of range both sides: clipped
                        (np.arange(-4, 5, dtype=np.float32) + 0.5) * np.float32(q.scale)])  # exact halves
    info = np.iinfo(dtype)
    expected = np.clip(np.round(x / np.float32(q.scale) + np.float32(zero_point)), info.min, info.max).astype(dtype)
    got = _quantize(x, (1, len(x)), q)
    assert got.dtype == dtype and got.shape == (1, len(x))
    assert np.array_equal(got, expected.reshape(1, -1))
    back = _dequantize(got, q)
    inside = (x >= (info.min - zero_point) * q.scale) & (x <= (info.max - zero_point) * q.scale)
    assert np.abs(back.ravel()[inside] - x[inside]).max() <= q.scale / 2 + 1e-6


def test_float_models_pass_inputs_through_as_float32():
    x = np.arange(6, dtype=np.float64)
    out = _quantize(x, (2, 3), None)
    assert out.dtype == np.float32 and out.shape == (2, 3)
