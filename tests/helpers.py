"""Test helpers: generated images and a fake data root in the layout of ../shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from sigedge.synth import synthetic_signature

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def make_fake_data_root(root: Path, writers: int = 6, genuine: int = 7, forgeries: int = 3) -> Path:
    """Tiny synthetic stand-ins for the three signature collections, same CSV layouts."""
    for ds, offset in (("sigcomp2011_dutch", 0), ("ssbi", 100)):
        rows = []
        for w in range(writers):
            wid = f"{w:03d}"
            for s in range(genuine):
                p = f"images/{wid}/{wid}_{s:02d}.png"
                write_png(root / ds / p, synthetic_signature(offset + w, s))
                rows.append([p, wid, "genuine", ""])
            for s in range(forgeries):  # a "forgery": another writer's hand imitating the shape
                p = f"images/{wid}_forg/{wid}_{s:02d}.png"
                write_png(root / ds / p, synthetic_signature(offset + w, 100 + s, jitter=2.5))
                rows.append([p, wid, "forgery", "999"])
        with open(root / ds / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([["path", "writer", "kind", "forger"], *rows])
    rows = []
    for w in range(writers):
        wid = f"e{w:03d}"
        for name in range(1, 3):
            for m, medium in enumerate(("paper", "ipad", "phone_a", "phone_b")):
                p = f"images/{wid}/{name:02d}_{medium}.png"
                write_png(root / "cross_media_chinese" / p, synthetic_signature(200 + 10 * w + name, m))
                rows.append([p, wid, str(name), medium])
    with open(root / "cross_media_chinese" / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "writer", "name_index", "medium"], *rows])
    return root


def make_eval_csv(root: Path, writers: int = 4, genuine: int = 7, forgeries: int = 2) -> Path:
    """A ``sigedge evaluate`` CSV over generated signatures."""
    rows = []
    for w in range(writers):
        for s in range(genuine):
            rows.append([str(write_png(root / f"w{w}_{s}.png", synthetic_signature(w, s)).name), f"w{w}", "genuine"])
        for s in range(forgeries):
            img = synthetic_signature(w, 50 + s, jitter=2.5)
            rows.append([str(write_png(root / f"w{w}_f{s}.png", img).name), f"w{w}", "forgery"])
    out = root / "labels.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["path", "writer", "kind"], *rows])
    return out


def cosine_verification(ver: dict) -> dict:
    """A manifest's verification block as a bundle without a learned scorer states it."""
    if "scorer" not in ver:
        return dict(ver)
    cosine = ver["cosine"]
    return {"fusion": ver.get("fusion", "mean"), "references_calibrated": ver.get("references_calibrated", 5),
            "thresholds": cosine["thresholds"], "default_threshold": cosine["default_threshold"],
            "band": cosine["band"]}


def normalised_bundle(tmp_path: Path, strength: float = 0.6, centre: float = 0.7) -> Path:
    """A copy of the packaged bundle whose manifest states a per-writer score normalisation
    (as ``python -m export.scoring`` writes it) and an identification threshold."""
    import json
    import shutil

    from sigedge.bundle import default_bundle_dir

    bundle = tmp_path / "normalised-bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["verification"] = cosine_verification(manifest["verification"])
    manifest["verification"]["writer_normalisation"] = {"strength": strength, "centre": centre}
    manifest["identification"] = {"threshold": manifest["verification"]["thresholds"]["far_random_1pct"]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def assert_only_scoring_changed(before: dict, after: dict) -> None:
    """A scoring fit rewrites a manifest's verification and identification blocks only:
    model files, hashes, detection and parity stay as they were."""
    for key in set(before) | set(after):
        if key not in ("verification", "identification"):
            assert after.get(key) == before.get(key), key
