import json
import shutil

import pytest

from sigedge.bundle import ModelBundle, default_bundle_dir
from sigedge.errors import ModelError


def copy_bundle(tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), d)
    return d


def test_default_bundle_loads_and_states_its_contract():
    b = ModelBundle.load()
    emb = b.model("embedder")
    assert emb.precision == "int8" and emb.l2_normalize and emb.metric == "cosine"
    assert emb.input_channels == 1 and emb.output_dim > 0
    assert emb.file.stat().st_size <= 1_500_000
    assert "thresholds" in b.verification and b.verification["default_threshold"] in b.verification["thresholds"]
    assert b.manifest["license"] and b.manifest["training_data"]


def test_hash_mismatch_is_a_model_error(tmp_path):
    d = copy_bundle(tmp_path)
    f = d / "embedder_int8.tflite"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        ModelBundle.load(d)


def test_missing_manifest_or_file_or_wrong_format(tmp_path):
    with pytest.raises(ModelError, match="manifest"):
        ModelBundle.load(tmp_path)
    d = copy_bundle(tmp_path)
    (d / "embedder_float.tflite").unlink()
    with pytest.raises(ModelError, match="missing"):
        ModelBundle.load(d)
    d2 = copy_bundle(tmp_path / "b2")
    m = json.loads((d2 / "manifest.json").read_text())
    m["format"] = "something-else"
    (d2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="format"):
        ModelBundle.load(d2)
    (d2 / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        ModelBundle.load(d2)
