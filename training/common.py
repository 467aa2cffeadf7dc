"""What the embedder's and the detector's training scripts share: options, batch thread, schedule."""

from __future__ import annotations

import argparse
import queue
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from training import data as D


def base_parser(doc: str, epochs: int, qat_epochs: int, batch: int) -> argparse.ArgumentParser:
    """Options every training run has: data, output, cache, schedule, seed, resume."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=D.DEFAULT_DATA_ROOT)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sigedge-train")
    p.add_argument("--epochs", type=int, default=epochs, help="float epochs")
    p.add_argument("--qat-epochs", type=int, default=qat_epochs)
    p.add_argument("--steps", type=int, default=100, help="steps per epoch")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    return p


def recorded_options(args: argparse.Namespace) -> dict[str, str | list[str]]:
    """The run's options as its state.json records them: each value as ``str(value)``, a
    repeatable option (a list) as a list of such strings, so that a value with a space in it
    (a path) stays one value. ``export/provenance.training_command`` turns it back into a command."""
    return {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in vars(args).items()}


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, floor: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``floor`` x the peak."""

    def lr(step: int) -> float:
        warm = max(1, warmup_steps)
        if step < warm:
            return peak * (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t)))

    return lr


class BackgroundBatches:
    """Batches made by ``make()`` in a background thread (OpenCV releases the GIL).

    An exception in the thread is handed to the training loop by :meth:`next` rather than
    leaving it waiting forever on an empty queue.
    """

    def __init__(self, make: Callable[[], tuple], prefetch: int = 6):
        self._make = make
        self.q: queue.Queue = queue.Queue(prefetch)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop:
                self.q.put(self._make())
        except Exception as exc:
            self.q.put(exc)

    def next(self):
        item = self.q.get()
        if isinstance(item, Exception):
            raise RuntimeError("making training batches failed") from item
        return item

    def close(self):
        self.stop = True
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
