"""Training code for sigedge models (needs the ``train`` extra: TensorFlow, tf-keras, tfmot).

Importing the package sets what TensorFlow reads once, when it is first imported, so that
every ``python -m training.…`` command and every test that trains gets it:

* ``TF_USE_LEGACY_KERAS=1``: tensorflow-model-optimization 0.8 needs Keras 2 (``tf_keras``);
* ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow turns oneDNN's CPU kernels on by itself only on
  CPUs with AVX-512 VNNI / BF16 / AMX; on an AVX2-only CPU (such as the project's 2-core AMD
  EPYC build machine) they stay off, and with them on the embedder trains about twice as
  fast there (``python benchmarks/train_speed.py``, ``benchmarks/results/train-speed.json``).
  The kernels round differently; over a training run that makes a different run, as another
  seed would, not a worse one.

An explicit setting in the environment wins over both.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
