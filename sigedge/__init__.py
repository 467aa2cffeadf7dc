"""sigedge: offline handwritten signature verification on the edge.

>>> import sigedge
>>> pipe = sigedge.Pipeline()                       # bundled int8 models
>>> pipe.verify("query.png", ["ref1.png", "ref2.png"]).genuine
>>> gallery = sigedge.Gallery("branch.gallery")     # persistent 1:N store
>>> gallery.enroll("alice", ["a1.png", "a2.png"]); gallery.identify("query.png", k=5)

Public names are loaded on first use, so ``import sigedge`` is cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    GalleryError,
    InvalidImageError,
    ModelError,
    NoSignatureError,
    SigedgeError,
    UsageError,
)

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "pipeline",
    "PipelineOptions": "pipeline",
    "VerifyResult": "pipeline",
    "PageSignature": "pipeline",
    "SignatureFeatures": "pipeline",
    "LearnedScorer": "scoring",
    "ink_statistics": "scoring",
    "Detection": "detect",
    "DetectOptions": "detect",
    "DetectionReport": "detection_metrics",
    "evaluate_detections": "detection_metrics",
    "Gallery": "gallery",
    "GalleryOptions": "gallery",
    "Match": "gallery",
    "EnrollResult": "gallery",
    "WriterInfo": "gallery",
    "GalleryInfo": "gallery",
    "ReindexResult": "gallery",
    "AuditReport": "gallery",
    "check_audit": "gallery",
    "reindex_gallery": "gallery",
    "pipeline_for_gallery": "gallery",
    "verify_in_gallery": "gallery",
    "ModelBundle": "bundle",
    "NormalizeOptions": "normalize",
    "NormalizedSignature": "normalize",
    "normalize_signature": "normalize",
    "CleanOptions": "clean",
    "clean_signature": "clean",
    "load_image": "imageio",
}

__all__ = sorted([*_LAZY, "SigedgeError", "UsageError", "InvalidImageError", "NoSignatureError", "ModelError",
                  "GalleryError", "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sigedge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
