"""Write the writer-disjoint split as ``sigedge evaluate`` CSVs under training/splits/.

    python -m training.make_splits

Paths in the CSVs are relative to the CSV, so they resolve against ``../shared/data``
beside the repository. Cross-media identities are (writer, name) pairs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training import data as D

SPLITS_DIR = Path(__file__).resolve().parent / "splits"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=D.DEFAULT_DATA_ROOT)
    p.add_argument("--out", type=Path, default=SPLITS_DIR)
    args = p.parse_args(argv)
    samples = D.load_all(args.data)
    train_w, val_w = D.split_writers(samples)
    for ds in D.VAL_FRACTION:
        for name, writers in (("train", train_w), ("val", val_w)):
            subset = [s for s in samples if s.dataset == ds and s.writer in writers]
            D.write_eval_csv(subset, args.out / f"{ds}_{name}.csv", identity_as_writer=(ds == "cross_media_chinese"))
            print(f"{ds}_{name}: {len(subset)} images, {len({s.writer for s in subset})} writers")


if __name__ == "__main__":
    main()
