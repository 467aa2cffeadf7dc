"""Write the writer-disjoint split as ``sigedge evaluate`` CSVs under training/splits/.

    python -m training.make_splits            # fold 0, the shipped split
    python -m training.make_splits --fold 2   # training/splits/fold2/

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
    p.add_argument("--out", type=Path, default=None,
                   help="default: training/splits (fold 0) or training/splits/fold<K>")
    p.add_argument("--fold", type=int, default=0, help="validation block of writers (training.data.split_writers)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = SPLITS_DIR if args.fold == 0 else SPLITS_DIR / f"fold{args.fold}"
    samples = D.load_all(args.data)
    train_w, val_w = D.split_writers(samples, fold=args.fold)
    for ds in D.VAL_FRACTION:
        for name, writers in (("train", train_w), ("val", val_w)):
            subset = [s for s in samples if s.dataset == ds and s.writer in writers]
            D.write_eval_csv(subset, args.out / f"{ds}_{name}.csv", identity_as_writer=(ds == "cross_media_chinese"))
            print(f"{ds}_{name}: {len(subset)} images, {len({s.writer for s in subset})} writers")


if __name__ == "__main__":
    main()
