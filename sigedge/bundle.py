"""The model bundle: ``.tflite`` files plus a ``manifest.json`` that states their contract.

A bundle directory holds ``manifest.json`` and the model files it lists. The manifest,
not the tensors' shapes, says how to feed and read each model: input size and
normalisation, output name and dimension, metric, calibrated thresholds. Every file's
sha256 is checked when the bundle is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ModelError
from .normalize import NormalizeOptions

__all__ = ["ModelSpec", "ModelBundle", "default_bundle_dir", "sha256_file", "spec_from_entry", "BUNDLE_FORMAT"]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "sigedge-bundle/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_bundle_dir() -> Path:
    """The bundle shipped inside the package."""
    return Path(str(resources.files("sigedge") / "models" / "default"))


@dataclass(frozen=True)
class ModelSpec:
    """One model's contract, as the manifest states it."""

    role: str
    file: Path
    sha256: str
    precision: str
    input_name: str
    input_height: int
    input_width: int
    input_channels: int
    input_range: tuple[float, float]
    output_name: str
    output_dim: int
    l2_normalize: bool
    metric: str
    raw: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, hash-checked bundle."""

    directory: Path
    manifest: dict
    models: dict[str, ModelSpec]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.directory.name))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0"))

    @property
    def normalize_options(self) -> NormalizeOptions:
        emb = self.models["embedder"]
        pre = dict(self.manifest.get("preprocessing", {}))
        pre.update(height=emb.input_height, width=emb.input_width)
        allowed = set(NormalizeOptions.__dataclass_fields__)
        return NormalizeOptions(**{k: v for k, v in pre.items() if k in allowed})

    @property
    def verification(self) -> dict:
        return dict(self.manifest.get("verification", {}))

    @property
    def query_rotations(self) -> tuple[float, ...]:
        """The angles the verification thresholds were calibrated with, a query scored at its
        best of them (``verification.query_rotations``; upright only where none are stated)."""
        return tuple(float(a) for a in self.verification.get("query_rotations", [0.0]))

    @property
    def identification(self) -> dict:
        return dict(self.manifest.get("identification", {}))

    def model(self, role: str) -> ModelSpec:
        try:
            return self.models[role]
        except KeyError:
            raise ModelError(f"bundle {self.directory} has no {role!r} model (has: {', '.join(self.models)})") from None

    @classmethod
    def load(cls, directory: str | Path | None = None, verify_hashes: bool = True) -> "ModelBundle":
        d = Path(directory) if directory is not None else default_bundle_dir()
        manifest_path = d / "manifest.json"
        if not manifest_path.is_file():
            raise ModelError(f"{d}: not a model bundle (no manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{manifest_path}: unreadable manifest ({exc})") from exc
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ModelError(f"{manifest_path}: format {manifest.get('format')!r} is not {BUNDLE_FORMAT!r}")
        models = {role: spec_from_entry(d, role, m) for role, m in manifest.get("models", {}).items()}
        if "embedder" not in models:
            raise ModelError(f"{manifest_path}: the bundle has no 'embedder' model")
        if verify_hashes:
            for spec in models.values():
                _check_hash(spec)
        return cls(directory=d, manifest=manifest, models=models)


def spec_from_entry(d: Path, role: str, m: dict[str, Any]) -> ModelSpec:
    """The contract of one manifest entry ``m`` whose file lies in the folder ``d``."""
    try:
        inp, out = m["input"], m["output"]
        return ModelSpec(
            role=role,
            file=d / m["file"],
            sha256=m["sha256"],
            precision=m.get("precision", "float32"),
            input_name=inp.get("name", "image"),
            input_height=int(inp["height"]),
            input_width=int(inp["width"]),
            input_channels=int(inp.get("channels", 1)),
            input_range=tuple(inp.get("range", (0.0, 1.0))),  # type: ignore[arg-type]
            output_name=out.get("name", "embedding"),
            output_dim=int(out.get("dim", 0)),
            l2_normalize=bool(out.get("l2_normalize", False)),
            metric=m.get("metric", "cosine"),
            raw=m,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"manifest entry {role!r} is incomplete ({exc})") from exc


def _check_hash(spec: ModelSpec) -> None:
    if not spec.file.is_file():
        raise ModelError(f"{spec.file}: model file listed in the manifest is missing")
    actual = sha256_file(spec.file)
    if actual != spec.sha256:
        raise ModelError(f"{spec.file.name}: sha256 {actual[:12]}... does not match the manifest ({spec.sha256[:12]}...)")
