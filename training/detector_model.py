"""The sigedge signature detector: a centre-heatmap + box head on a MobileNetV2 backbone.

Anchor-free, CenterNet-style, at stride 8. A page (grayscale, letterboxed to a square,
paper 0 and ink 1, like the embedder's canvas) goes in; two maps come out:

* ``heatmap`` (H/8, W/8, 1): logit that a signature's centre falls in the cell;
* ``box`` (H/8, W/8, 4): ``log(w/8), log(h/8), dx, dy`` of the box centred there
  (dx, dy: the centre's offset inside the cell, 0..1).

Decoding (peaks, boxes, NMS) lives in the runtime, ``sigedge.detect``. Logits rather than
sigmoid probabilities are exported because int8 keeps more resolution near the decision
threshold on the logit scale. Built with tf_keras as one flat functional model, so that
``tfmot.quantization.keras.quantize_model`` accepts it. The network is fully
convolutional: it trains on 320x320 crops and is exported at 640x640.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import math  # noqa: E402

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

STRIDE = 8
#: Prior probability of a centre in a cell; the heatmap bias starts at its logit so that
#: the focal loss does not begin with a flood of confident false positives.
CENTRE_PRIOR = 0.01


def build_detector(size: int = 320, alpha: float = 0.35, head_channels: int = 64) -> keras.Model:
    inp = keras.Input((size, size, 1), name="image")
    base = keras.applications.MobileNetV2(input_tensor=inp, alpha=alpha, include_top=False, weights=None)
    for layer in base.layers:  # short runs: moving statistics must follow the weights
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.99
    c3 = base.get_layer("block_5_add").output  # stride 8
    c4 = base.get_layer("block_12_add").output  # stride 16
    c5 = base.get_layer("block_16_project_BN").output  # stride 32

    def lateral(x, name):
        x = keras.layers.Conv2D(head_channels, 1, use_bias=False, name=f"{name}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.99, name=f"{name}_bn")(x)
        return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)

    p5 = lateral(c5, "lat5")
    p4 = keras.layers.Add(name="fuse4")([lateral(c4, "lat4"), keras.layers.UpSampling2D(2, name="up5")(p5)])
    p3 = keras.layers.Add(name="fuse3")([lateral(c3, "lat3"), keras.layers.UpSampling2D(2, name="up4")(p4)])
    x = p3
    for k in range(2):
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"head{k}_dw")(x)
        x = keras.layers.BatchNormalization(momentum=0.99, name=f"head{k}_dw_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"head{k}_dw_relu")(x)
        x = keras.layers.Conv2D(head_channels, 1, use_bias=False, name=f"head{k}_pw")(x)
        x = keras.layers.BatchNormalization(momentum=0.99, name=f"head{k}_pw_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"head{k}_pw_relu")(x)
    prior = -math.log((1 - CENTRE_PRIOR) / CENTRE_PRIOR)
    heat = keras.layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(prior), name="heatmap")(x)
    box = keras.layers.Conv2D(4, 1, name="box")(x)
    return keras.Model(inp, [heat, box], name="sigedge_detector")


def quantize_aware(model: keras.Model) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(model)


def detection_loss(heat_logits, box_pred, heat_target, box_target, box_mask):
    """CenterNet focal loss on the heatmap plus L1 on the box at the centre cells.

    ``heat_target`` is a Gaussian per box, exactly 1.0 at its centre cell; ``box_mask``
    (B, h, w, 1) marks the centre cells where ``box_target`` holds the regression target.
    Both terms are normalised by the number of boxes in the batch.
    """
    p = tf.clip_by_value(tf.sigmoid(heat_logits), 1e-4, 1 - 1e-4)
    pos = tf.cast(heat_target >= 0.999, tf.float32)
    neg = 1.0 - pos
    pos_loss = -tf.math.log(p) * tf.square(1 - p) * pos
    neg_loss = -tf.math.log(1 - p) * tf.square(p) * tf.pow(1 - heat_target, 4) * neg
    n = tf.maximum(tf.reduce_sum(pos), 1.0)
    focal = (tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / n
    reg = tf.reduce_sum(tf.abs(box_pred - box_target) * box_mask) / n
    return focal + reg, focal, reg
