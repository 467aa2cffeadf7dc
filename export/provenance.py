"""What a bundle's models were made from: the run's weights and the converter that made them.

The same weights converted by another TensorFlow release give other bytes (re-exporting the
2026-11-28 embedder with TensorFlow 2.21.0 on 2026-12-03 gave other sha256s for both files,
parity within 0.2 points), while one release gives the same bytes every time. So a model
card's sha256 can only be checked against the versions recorded here.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from sigedge.bundle import sha256_file

#: Packages whose release decides the bytes of a converted model.
CONVERTER_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization")


def converter_versions() -> dict[str, str]:
    out = {}
    for name in CONVERTER_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(run: Path) -> dict:
    """sha256 of the run's weight files (``*.h5``) and the converter's package versions."""
    return {"weights_sha256": {p.name: sha256_file(p) for p in sorted(Path(run).glob("*.h5"))},
            "converted_with": converter_versions()}
