"""How the embedder's accuracy on new writers depends on how many writers it trained on.

    python benchmarks/learning_curve.py \\
        --run 0:1.0=training/checkpoints/embedder-v2@sigedge/models/default \\
        --run 0:0.5=runs/half-fold0 \\
        --run 2:1.0=training/checkpoints/embedder-v2-fold2@runs/embedder-fold2/bundle \\
        --run 2:0.5=runs/half-fold2 --out benchmarks/results/learning-curve.json

Each ``--run FOLD:FRACTION=RUN[@BUNDLE]`` is one training run of ``training.train_embedder``
with ``--fold FOLD --writer-fraction FRACTION`` (``RUN/bundle`` unless a bundle is given, made
by ``sigedge export --int8 --run RUN``). For each run this reports, on sigcomp2011_dutch:

- **unseen writers**: the fold's validation writers, int8 embedder, upright query, mean
  cosine over 5 references (the embedder alone: no learned scorer, which would be fitted on
  a different set of writers), skilled and random EER as the mean over ``--draws`` draws;
- **seen writers**: the same on the run's own training writers (their genuine signatures and
  skilled forgeries were training classes), which says how far the model memorises;
- the run's per-epoch validation history (float, one draw, every collection: SSBI's and the
  cross-media set's validation writers too) averaged over its last ``--last`` float epochs,
  which smooths one epoch's swing;
- what the run changed in the shipped recipe (``training/checkpoints/embedder-v2``'s recorded
  options) besides its fold and writer fraction, so that an experiment (``--mirror-writers``,
  ``--partial-view 0.5``...) is not read as a point of the curve. A different ``--seed`` is
  a change too: the same recipe with another seed measures one run's noise, not a fraction.

One training run varies by several points (model card), so a fraction's effect is only
readable where it is larger than that, or the same on every fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import read_rows, scores_report, split_dir  # noqa: E402
from robustness import describe_all  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from training import data as D  # noqa: E402

log = logging.getLogger("learning_curve")
COLLECTION = "sigcomp2011_dutch"
SHIPPED_RUN = ROOT / "training" / "checkpoints" / "embedder-v2"
#: Options that say where a run lives, whether it resumed, or which writers it trained on (the
#: curve's own axes), not how it learned.
NOT_RECIPE = frozenset({"data", "out", "cache", "resume", "fold", "writer_fraction"})


def parse_run(text: str) -> tuple[int, float, Path, Path]:
    head, _, paths = text.partition("=")
    fold, _, fraction = head.partition(":")
    run, _, bundle = paths.partition("@")
    try:
        k, f = int(fold), float(fraction)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FOLD:FRACTION=RUN[@BUNDLE], got {text!r}") from None
    if not run or not 0.0 < f <= 1.0:
        raise argparse.ArgumentTypeError(f"expected FOLD:FRACTION=RUN[@BUNDLE] with 0 < FRACTION <= 1, got {text!r}")
    return k, f, Path(run), Path(bundle) if bundle else Path(run) / "bundle"


def run_state(run: Path, fold: int, fraction: float) -> dict:
    """The run's state.json, refused when its recorded fold or writer fraction differ."""
    state = json.loads((run / "state.json").read_text())
    cfg = state.get("config") or {}
    if state.get("phase") != "done":
        raise SystemExit(f"{run}: the run has not finished (phase {state.get('phase')})")
    if int(cfg.get("fold", "0")) != fold or float(cfg.get("writer_fraction", "1.0")) != fraction:
        raise SystemExit(f"{run}: trained with --fold {cfg.get('fold', '0')} --writer-fraction "
                         f"{cfg.get('writer_fraction', '1.0')}, not {fold} and {fraction}")
    return state


def recipe_changes(cfg: dict, shipped: dict, defaults: dict) -> dict[str, str] | None:
    """The options (recorded as ``str(value)``) on which a run's ``cfg`` differs from the shipped
    recipe's; an option either run did not record (older than the option) takes its default.
    None when the run recorded no options at all (nothing to compare)."""
    if not cfg:
        return None

    def value(c: dict, key: str) -> str:
        return str(c.get(key, defaults[key]))

    return {k: value(cfg, k) for k in defaults if k not in NOT_RECIPE and value(cfg, k) != value(shipped, k)}


def training_defaults() -> dict:
    """What ``training.train_embedder`` does for an option a run did not record: what it did
    before the option existed where the script says so (``BEFORE_THE_OPTION``, as
    ``export.provenance.training_command`` reads it), else today's default. Imports TensorFlow."""
    from training import train_embedder

    defaults = vars(train_embedder.parse_args(["--out", "unused"]))
    return {**defaults, **getattr(train_embedder, "BEFORE_THE_OPTION", {})}


def history_summary(state: dict, last: int) -> dict:
    """Mean, min and max of each collection's validation EERs over the last float epochs."""
    rows = [h for h in state["history"] if h["phase"] == "float"][-last:]
    out: dict = {"epochs": [h["epoch"] for h in rows]}
    for key in sorted(rows[0]):
        v = [h[key] for h in rows if h.get(key) is not None] if key.endswith(("_skilled", "_random")) else []
        if v:
            out[key] = {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
    return out


def collection_rows(fold: int, split: str, writers: set[str] | None = None) -> tuple[list, list[str], list[str]]:
    """Images, writers and kinds of the fold's sigcomp2011_dutch ``split`` CSV, optionally
    only the rows of ``writers`` (``training.data`` names: ``sigcomp2011_dutch:002``)."""
    images, names, kinds = read_rows(split_dir(fold) / f"{COLLECTION}_{split}.csv")
    keep = [i for i, w in enumerate(names) if writers is None or f"{COLLECTION}:{w}" in writers]
    return [images[i] for i in keep], [names[i] for i in keep], [kinds[i] for i in keep]


def mean_cosine_eers(pipe: Pipeline, rows: tuple[list, list[str], list[str]], draws: int, refs: int) -> dict:
    images, writers, kinds = rows
    emb, _ = describe_all(pipe, images)
    reps = [scores_report(emb, writers, kinds, refs, seed) for seed in range(draws)]
    return {"writers": reps[0]["writers"], "n_genuine": reps[0]["n_genuine"], "n_skilled": reps[0]["n_skilled"],
            "eer_skilled_per_draw": [r["eer_skilled"] for r in reps],
            "eer_random_per_draw": [r["eer_random"] for r in reps],
            "eer_skilled": float(np.mean([r["eer_skilled"] for r in reps])),
            "eer_random": float(np.mean([r["eer_random"] for r in reps]))}


def evaluate_run(samples, fold: int, fraction: float, run: Path, bundle: Path, args, shipped: dict,
                 defaults: dict) -> dict:
    state = run_state(run, fold, fraction)
    writers, _ = D.split_writers(samples, fold=fold, train_fraction=fraction)
    counts = {ds: sum(w.startswith(ds + ":") for w in writers) for ds in D.VAL_FRACTION}
    pipe = Pipeline(bundle, PipelineOptions(query_rotations=(0.0,), threshold=0.5))
    out = {"fold": fold, "writer_fraction": fraction, "run": str(run), "bundle": str(bundle),
           "model_sha256": pipe.model_sha256, "training_writers": counts,
           "unseen": mean_cosine_eers(pipe, collection_rows(fold, "val"), args.draws, args.refs),
           "seen": mean_cosine_eers(pipe, collection_rows(fold, "train", writers), args.seen_draws, args.refs),
           "history_last_float_epochs": history_summary(state, args.last),
           "recipe_changes": recipe_changes(state.get("config"), shipped, defaults)}
    log.info("fold %d fraction %.2f: unseen %.2f / %.2f %%, seen %.2f / %.2f %%", fold, fraction,
             100 * out["unseen"]["eer_skilled"], 100 * out["unseen"]["eer_random"],
             100 * out["seen"]["eer_skilled"], 100 * out["seen"]["eer_random"])
    return out


def recipe_label(changes: dict[str, str] | None) -> str:
    if changes is None:
        return "options not recorded"
    return " ".join(f"{k}={v}" for k, v in changes.items()) or "shipped"


def print_table(rows: list[dict]) -> None:
    print(f"{'fold':>4} {'fraction':>8} {'SigComp writers':>15} {'unseen skilled':>14} {'random':>7} "
          f"{'seen skilled':>12} {'random':>7} {'history skilled':>15} {'random':>7} {'SSBI skilled':>12} "
          f"{'CM random':>9}  recipe")
    for r in rows:
        h = r["history_last_float_epochs"]
        print(f"{r['fold']:>4} {r['writer_fraction']:>8.2f} {r['training_writers'][COLLECTION]:>15} "
              f"{100 * r['unseen']['eer_skilled']:>13.2f}% {100 * r['unseen']['eer_random']:>6.2f}% "
              f"{100 * r['seen']['eer_skilled']:>11.2f}% {100 * r['seen']['eer_random']:>6.2f}% "
              f"{100 * h[f'{COLLECTION}_eer_skilled']['mean']:>14.2f}% "
              f"{100 * h[f'{COLLECTION}_eer_random']['mean']:>6.2f}% "
              f"{100 * h['ssbi_eer_skilled']['mean']:>11.2f}% {100 * h['cross_media_chinese_eer_random']['mean']:>8.2f}%  "
              + recipe_label(r["recipe_changes"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=parse_run, action="append", required=True, metavar="FOLD:FRACTION=RUN[@BUNDLE]")
    ap.add_argument("--draws", type=int, default=10, help="reference draws on the unseen writers")
    ap.add_argument("--seen-draws", type=int, default=3, help="reference draws on the seen writers")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--last", type=int, default=10, help="float epochs of the history to average")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    samples = D.load_all()
    shipped = json.loads((SHIPPED_RUN / "state.json").read_text())["config"]
    defaults = training_defaults()
    rows = [evaluate_run(samples, *r, args, shipped, defaults) for r in args.run]
    result = {"command": "python benchmarks/learning_curve.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "refs": args.refs, "draws": args.draws, "seen_draws": args.seen_draws, "runs": rows}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
