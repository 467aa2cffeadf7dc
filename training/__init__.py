"""Training code for sigedge models (needs the ``train`` extra: TensorFlow, tf-keras, tfmot)."""
