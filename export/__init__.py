"""Conversion of trained Keras models to TFLite, parity checks and bundle writing (``train`` extra)."""
