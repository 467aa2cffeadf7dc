from __future__ import annotations

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def pipeline():
    from sigedge import Pipeline

    return Pipeline()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    """A gallery key in the developer's environment must not leak into the tests."""
    monkeypatch.delenv("SIGEDGE_GALLERY_KEY", raising=False)


@pytest.fixture(scope="session")
def embedder():
    """The deterministic stand-in embedder of the gallery tests (tests/test_gallery_support.py)."""
    from tests.test_gallery_support import SketchEmbedder

    return SketchEmbedder()


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED_DATA / "sigcomp2011_dutch" / "labels.csv").exists():
        pytest.skip(f"real signature data not found at {SHARED_DATA} (CI provides it)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    import importlib.util

    # find_spec, not import: importing TensorFlow here would slow every run and hide
    # accidental TensorFlow imports in the runtime.
    if not all(importlib.util.find_spec(m) for m in ("tensorflow", "tf_keras", "tensorflow_model_optimization")):
        skip = pytest.mark.skip(reason="needs the train extra (pip install '.[train]')")
        for item in items:
            if "train" in item.keywords:
                item.add_marker(skip)
