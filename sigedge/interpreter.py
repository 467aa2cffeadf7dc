"""TFLite interpreter loading with backend fallback, and int8 quantisation handling.

Backends, in order of preference: ``ai_edge_litert`` (maintained, fastest here),
``tflite_runtime`` (older wheels, e.g. on a Coral board), ``tensorflow.lite`` (heavy; only
if TensorFlow happens to be installed). TensorFlow is never imported unless the other two
are missing.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError

__all__ = ["TFLiteModel", "TFLiteMultiOutputModel", "interpreter_backend", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
_backend_cache: dict[str, Any] = {}


def _interpreter_class() -> tuple[str, Any]:
    if "cls" in _backend_cache:
        return _backend_cache["name"], _backend_cache["cls"]
    for mod_name in BACKENDS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        cls = getattr(mod, "Interpreter", None)
        if cls is not None:
            _backend_cache.update(name=mod_name, cls=cls)
            return mod_name, cls
    raise ModelError("no TFLite interpreter found: pip install ai-edge-litert (or tflite-runtime)")


def interpreter_backend() -> str:
    """Name of the module that provides the TFLite interpreter."""
    return _interpreter_class()[0]


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence fd 2 while the interpreter is built.

    The TFLite runtime writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from
    C++ straight to the process's stderr, with no switch to turn it off; a command line
    whose errors are one line each cannot have that. Failures still raise Python
    exceptions, which carry the message.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (e.g. by a test runner)
        fd = 2
    with _stderr_lock:
        try:
            saved = os.dup(fd)
        except OSError:
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            sys.stderr.flush()
            os.dup2(devnull, fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            os.close(devnull)


@dataclass(frozen=True)
class _Quant:
    scale: float
    zero_point: int
    dtype: Any


class TFLiteModel:
    """One TFLite model with a single input and a single output, run one sample at a time.

    Float32 in and out whatever the model's own tensor types are: int8/uint8 tensors are
    (de)quantised with the scale and zero point stored in the model.
    """

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        name, self._interp = _load(self.path, threads)
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path.name}: expected one input and one output tensor")
        self._in, self._out = inputs[0], outputs[0]
        self.backend = name
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.output_shape = tuple(int(d) for d in self._out["shape"])
        self.input_dtype = np.dtype(self._in["dtype"])
        self._in_q = _quant(self._in)
        self._out_q = _quant(self._out)

    @property
    def quantized(self) -> bool:
        return self._in_q is not None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run one sample; ``x`` has the model's input shape without the batch axis."""
        self._interp.set_tensor(self._in["index"], _quantize(x, self.input_shape, self._in_q))
        self._interp.invoke()
        y = _dequantize(self._interp.get_tensor(self._out["index"]), self._out_q)
        return y.reshape(self.output_shape[1:])


class TFLiteMultiOutputModel:
    """A TFLite model with one input and several named outputs (e.g. a detector's maps).

    Outputs are looked up by their names in the model's serving signature, as the bundle
    manifest states them, never by shape or tensor order. Float32 in and out, as
    :class:`TFLiteModel`.
    """

    def __init__(self, path: str | Path, output_names: list[str], threads: int = 1):
        self.path = Path(path)
        name, self._interp = _load(self.path, threads)
        inputs = self._interp.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path.name}: expected one input tensor, found {len(inputs)}")
        self._in = inputs[0]
        by_name = self._signature_outputs()
        missing = [n for n in output_names if n not in by_name]
        if missing:
            raise ModelError(f"{self.path.name}: outputs {missing} named in the manifest are not in the model "
                             f"(has: {', '.join(sorted(by_name))})")
        self._outs = {n: by_name[n] for n in output_names}
        self.backend = name
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.output_shapes = {n: tuple(int(d) for d in d_["shape"]) for n, d_ in self._outs.items()}
        self._in_q = _quant(self._in)
        self._out_q = {n: _quant(d_) for n, d_ in self._outs.items()}

    def _signature_outputs(self) -> dict[str, dict]:
        """Output tensor details keyed by signature output name."""
        try:
            sigs = self._interp.get_signature_list()
        except (AttributeError, ValueError, RuntimeError):
            sigs = {}
        details = {d["index"]: d for d in self._interp.get_output_details()}
        by_tensor_name = {d["name"]: d for d in details.values()}
        out: dict[str, dict] = {}
        for key, sig in sigs.items():
            runner = self._interp.get_signature_runner(key)
            for out_name, detail in runner.get_output_details().items():
                match = by_tensor_name.get(detail["name"]) or details.get(detail.get("index"))
                if match is not None:
                    out.setdefault(out_name, match)
        if not out:  # models converted without a signature: the tensor names themselves
            out = dict(by_tensor_name)
        return out

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one sample; returns each named output without the batch axis."""
        self._interp.set_tensor(self._in["index"], _quantize(x, self.input_shape, self._in_q))
        self._interp.invoke()
        return {n: _dequantize(self._interp.get_tensor(d["index"]), self._out_q[n]).reshape(self.output_shapes[n][1:])
                for n, d in self._outs.items()}


def _load(path: Path, threads: int) -> tuple[str, Any]:
    """(backend name, allocated interpreter) for a model file."""
    name, cls = _interpreter_class()
    try:
        with _native_stderr_silenced():
            interp = cls(model_path=str(path), num_threads=max(1, int(threads)))
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path.name}: cannot load TFLite model ({exc})") from exc
    return name, interp


def _quantize(x: np.ndarray, shape: tuple[int, ...], q: _Quant | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(shape)
    if q is None:
        return x
    info = np.iinfo(q.dtype)
    # round(x / scale + zero_point), clipped, in one buffer: a 640x640 page took 3 ms with
    # a temporary per step and 0.3 ms in place (the same float32 operations, the same result)
    buf = np.divide(x, np.float32(q.scale), dtype=np.float32)
    buf += np.float32(q.zero_point)
    np.rint(buf, out=buf)
    np.clip(buf, info.min, info.max, out=buf)
    return buf.astype(q.dtype)


def _dequantize(y: np.ndarray, q: _Quant | None) -> np.ndarray:
    if q is None:
        return y.astype(np.float32)
    return (y.astype(np.float32) - q.zero_point) * q.scale


def _quant(detail: dict) -> _Quant | None:
    dtype = np.dtype(detail["dtype"])
    if dtype not in (np.int8, np.uint8, np.int16):
        return None
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        raise ModelError(f"tensor {detail.get('name')} is {dtype} but has no quantisation parameters")
    return _Quant(float(scale), int(zero_point), dtype)
