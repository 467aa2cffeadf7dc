"""The sigedge embedder: a flat functional MobileNetV2 on grayscale input.

Built with tf_keras (legacy Keras 2) because tensorflow-model-optimization does not
support Keras 3, and as one flat model because ``quantize_model`` refuses nested models.
The network outputs an un-normalised embedding; the runtime L2-normalises it (keeping
the division out of the int8 graph, where it would lose precision).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


def build_embedder(height: int = 128, width: int = 256, alpha: float = 0.35, dim: int = 128,
                   dropout: float = 0.2) -> keras.Model:
    inp = keras.Input((height, width, 1), name="image")
    base = keras.applications.MobileNetV2(input_tensor=inp, alpha=alpha, include_top=False,
                                          weights=None, pooling="avg")
    # Keras' MobileNetV2 uses BN momentum 0.999, tuned for ImageNet-length runs; with a few
    # thousand steps the moving statistics would lag far behind the weights.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.99
    x = base.output
    if dropout:
        x = keras.layers.Dropout(dropout, name="embed_dropout")(x)
    out = keras.layers.Dense(dim, name="embedding")(x)
    return keras.Model(inp, out, name="sigedge_embedder")


def build_signet(height: int = 150, width: int = 220, dim: int = 2048) -> keras.Model:
    """The SigNet architecture (Hafemann et al., 2017), the baseline of the side-by-side report.

    Five convolutions (96x11x11/4, 256x5x5, 384x3x3, 384x3x3, 256x3x3) with batch norm,
    three max-pools, and two fully connected layers of ``dim`` units whose last output is
    the embedding: about 15.8 M parameters at 150x220, 63 MB in float32. Trained here with
    the sigedge objective and data, float only, to answer whether a model 60x larger does
    better on the same writers.
    """
    inp = keras.Input((height, width, 1), name="image")

    def conv_bn(x, filters, kernel, stride=1, name=""):
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
        x = keras.layers.BatchNormalization(momentum=0.99, name=name + "_bn")(x)
        return keras.layers.ReLU(name=name + "_relu")(x)

    x = conv_bn(inp, 96, 11, 4, "conv1")
    x = keras.layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = conv_bn(x, 256, 5, 1, "conv2")
    x = keras.layers.MaxPooling2D(3, 2, name="pool2")(x)
    x = conv_bn(x, 384, 3, 1, "conv3")
    x = conv_bn(x, 384, 3, 1, "conv4")
    x = conv_bn(x, 256, 3, 1, "conv5")
    x = keras.layers.MaxPooling2D(3, 2, name="pool3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dim, use_bias=False, name="fc1")(x)
    x = keras.layers.ReLU(name="fc1_relu")(keras.layers.BatchNormalization(momentum=0.99, name="fc1_bn")(x))
    x = keras.layers.Dense(dim, name="embedding")(x)
    return keras.Model(inp, x, name="signet")


def build_model(arch: str, height: int, width: int, alpha: float, dim: int) -> keras.Model:
    """The embedder of a training run's ``--arch``."""
    if arch == "mobilenetv2":
        return build_embedder(height, width, alpha, dim, dropout=0.2)
    if arch == "signet":
        return build_signet(height, width, dim)
    raise ValueError(f"unknown architecture {arch!r}")


def quantize_aware(model: keras.Model) -> keras.Model:
    """Wrap a float embedder for quantization-aware training (same weights)."""
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(model)


class CosFaceHead(tf.Module):
    """Large-margin cosine softmax (CosFace) over identities; used only in training."""

    def __init__(self, dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.35, seed: int = 0):
        super().__init__()
        init = tf.random.stateless_normal((dim, n_classes), seed=(seed, 1), stddev=0.05)
        self.w = tf.Variable(init, name="cosface_w")
        self.scale = scale
        self.margin = margin

    def logits(self, emb: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        e = tf.math.l2_normalize(emb, axis=1)
        w = tf.math.l2_normalize(self.w, axis=0)
        cos = tf.matmul(e, w)
        onehot = tf.one_hot(labels, tf.shape(w)[1])
        return self.scale * (cos - self.margin * onehot)
