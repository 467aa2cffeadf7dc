"""The exporters' TFLite conversion gives the tensors and signatures Keras's own conversion gives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = [pytest.mark.train]


def small_qat_model():
    """A flat functional model with the shipped models' layer kinds and two named outputs."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((16, 32, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    heat = keras.layers.Conv2D(1, 1, name="heatmap")(x)
    vec = keras.layers.Dense(4, name="embedding")(keras.layers.GlobalAveragePooling2D()(x))
    float_model = keras.Model(inp, [heat, vec])
    return float_model, tfmot.quantization.keras.quantize_model(float_model)


def test_conversion_matches_keras_conversion_float_and_int8():
    pytest.importorskip("ai_edge_litert")  # the comparison runs both files through it
    from conversion import keras_float, keras_int8, largest_difference, outputs

    from export.export_embedder import convert_float, convert_int8

    float_model, qat_model = small_qat_model()
    rng = np.random.default_rng(0)
    x = (rng.random((4, 16, 32)) < 0.3).astype(np.float32)
    qat_model(x[..., None], training=True)  # moving ranges away from their initial values, as training leaves them

    pairs = [(convert_float(float_model), keras_float(float_model), {"heatmap", "embedding"}),
             (convert_int8(qat_model, x), keras_int8(qat_model, x), {"quant_heatmap", "quant_embedding"})]
    for ours, theirs, names in pairs:
        sig_ours, out_ours = outputs(ours, x)
        sig_theirs, out_theirs = outputs(theirs, x)
        assert sig_ours == sig_theirs  # the names the manifests record
        assert set(out_ours[0]) == names
        assert largest_difference(out_ours, out_theirs) == 0.0
