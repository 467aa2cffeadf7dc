"""Loaders for the real signature collections in ``../shared/data`` and writer-disjoint splits.

Every sample gets an *identity*: the class a metric-learning objective should pull
together. For SigComp/SSBI it is the writer; for the cross-media set it is
(writer, name) since every volunteer wrote the same ten names. Skilled forgeries of a
writer get their own identity ("forgeries of W"), SigNet-F style, so that training pushes
imitations away from the genuine signatures they imitate.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sigedge.imageio import load_image
from sigedge.normalize import NormalizeOptions, normalize_signature

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = Path(os.environ.get("SIGEDGE_DATA", REPO_ROOT.parent / "shared" / "data"))
SPLIT_SEED = 2026
#: Share of writers of each collection held out for validation.
VAL_FRACTION = {"sigcomp2011_dutch": 0.25, "ssbi": 0.25, "cross_media_chinese": 0.2}
#: References per identity in evaluation: a cross-media identity (writer, name) has only 4-5 samples.
EVAL_REFERENCES = {"sigcomp2011_dutch": 5, "ssbi": 5, "cross_media_chinese": 2}


@dataclass(frozen=True)
class Sample:
    path: Path
    dataset: str
    writer: str  # whose signature this is (for a forgery: the writer imitated)
    kind: str  # genuine | forgery
    identity: str  # training class


def load_skilled_collection(root: Path, name: str) -> list[Sample]:
    """SigComp 2011 Dutch or SSBI: labels.csv with path,writer,kind,forger."""
    out = []
    with open(root / name / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            writer = f"{name}:{row['writer']}"
            ident = writer if row["kind"] == "genuine" else f"{writer}:forged"
            out.append(Sample(root / name / row["path"], name, writer, row["kind"], ident))
    return out


def load_cross_media(root: Path) -> list[Sample]:
    name = "cross_media_chinese"
    out = []
    with open(root / name / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            writer = f"{name}:{row['writer']}"
            ident = f"{writer}:n{int(row['name_index']):02d}"
            out.append(Sample(root / name / row["path"], name, writer, "genuine", ident))
    return out


def load_all(root: Path = DEFAULT_DATA_ROOT) -> list[Sample]:
    if not (root / "sigcomp2011_dutch" / "labels.csv").exists():
        raise FileNotFoundError(f"no signature data under {root} (set SIGEDGE_DATA)")
    samples = load_skilled_collection(root, "sigcomp2011_dutch")
    samples += load_skilled_collection(root, "ssbi")
    samples += load_cross_media(root)
    return samples


def split_writers(samples: list[Sample], seed: int = SPLIT_SEED, fold: int = 0,
                  train_fraction: float = 1.0) -> tuple[set[str], set[str]]:
    """Writer-disjoint (train, validation) writer sets, fixed by the seed.

    Each collection's writers are shuffled once and cut into consecutive validation blocks
    of ``VAL_FRACTION`` of them; ``fold`` picks the block (fold 0 is the split the shipped
    models were trained and calibrated on). With a fraction of 0.25, folds 0-3 of
    sigcomp2011_dutch cover each of its 44 writers exactly once (the cross-validation of
    ``benchmarks/crossval.py``). ``train_fraction`` below 1 keeps only that share of the
    training writers (:func:`subsample_writers`); the validation writers stay the same.
    """
    if fold < 0:
        raise ValueError(f"fold must be >= 0, got {fold}")
    train, val = set(), set()
    for dataset, frac in VAL_FRACTION.items():
        writers = sorted({s.writer for s in samples if s.dataset == dataset})
        random.Random(f"{seed}:{dataset}").shuffle(writers)
        n_val = int(round(frac * len(writers)))
        start = (fold * n_val) % max(1, len(writers))
        held = set(writers[start:start + n_val])
        val.update(held)
        train.update(w for w in writers if w not in held)
    if train_fraction < 1.0:
        train = subsample_writers(samples, train, train_fraction)
    return train, val


def subsample_writers(samples: list[Sample], writers: set[str], fraction: float,
                      seed: int = SPLIT_SEED) -> set[str]:
    """A fixed share of ``writers``, taken per collection (at least two of each).

    For learning curves: each collection's writers are shuffled once by the seed, and a
    fraction keeps a prefix of that order, so a smaller share is a subset of a larger one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    kept: set[str] = set()
    for dataset in sorted({s.dataset for s in samples}):
        mine = sorted({s.writer for s in samples if s.dataset == dataset and s.writer in writers})
        random.Random(f"{seed}:{dataset}:subset").shuffle(mine)
        kept.update(mine[:max(min(2, len(mine)), int(round(fraction * len(mine))))])
    return kept


def write_eval_csv(samples: list[Sample], out_csv: Path, identity_as_writer: bool = False) -> None:
    """A ``sigedge evaluate`` CSV (path,writer,kind) with paths relative to the CSV."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "writer", "kind"])
        for s in samples:
            rel = os.path.relpath(s.path, out_csv.parent)
            who = (s.identity if identity_as_writer else s.writer).split(":", 1)[1]
            w.writerow([rel, who, s.kind])


def cache_key(samples: list[Sample], opts: NormalizeOptions) -> str:
    h = hashlib.sha256(repr(opts).encode())
    for s in samples:
        h.update(str(s.path).encode())
    return h.hexdigest()[:16]


def preprocess(samples: list[Sample], opts: NormalizeOptions, cache_dir: Path) -> np.ndarray:
    """Normalised uint8 canvases (N, H, W), cached on disk since decoding is the slow part."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"canvases_{cache_key(samples, opts)}.npy"
    if cache.exists():
        return np.load(cache)
    out = np.zeros((len(samples), opts.height, opts.width), dtype=np.uint8)
    for k, s in enumerate(samples):
        norm = normalize_signature(load_image(s.path), opts)
        out[k] = np.round(norm.canvas * 255).astype(np.uint8)
        if k % 500 == 0:
            log.info("preprocessed %d/%d", k, len(samples))
    np.save(cache, out)
    return out
