"""Which of a query's turned descriptions should verification score? Rules compared.

    python benchmarks/rotation_rules.py --fold 0=sigedge/models/default \\
        --fold 1=runs/bg-fold1/bundle --fold 2=… --fold 3=… --out benchmarks/results/rotation-rules.json

Verification describes a query upright and turned by ±10° (the bundle's query rotations) and
keeps the **best** of the three scores (``max``). That rescues slanted signatures, but every
impostor gets three chances too: over four folds, with the scorer that weighs a background of
other writers, the search costs upright SigComp signatures 1.0 point of skilled EER (model
card, "Since 2026-12-02"). Other rules, on the same descriptions and reference draws:

* ``upright``: the upright description only (no search);
* ``max``: the best score of the three (what ships);
* ``cosine-picked``: the angle whose mean cosine to the references is highest, then the
  scorer's score at that angle (the angle is chosen by how well the shape lines up, not by
  every feature at once);
* ``mean``: the mean of the three scores (log-odds);
* ``upright+M``: upright, unless a turned angle beats it by more than M in log-odds.

Each on the fold's SigComp validation writers, clean queries and the same queries turned by a
random angle in ±15° (``benchmarks/robustness.py``'s ``rotate``, seeded per image),
references upright; skilled and random EER and FRR at random FAR 1 %, mean of ``--draws``
reference draws. The margins are few and fixed here; choosing one by these numbers would be
tuning on the validation writers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from crossval import split_dir  # noqa: E402
from query_rotations import evaluate_folds  # noqa: E402
from robustness import describe_variants, rotate  # noqa: E402

from export.fit_scorer import _LogOdds  # noqa: E402
from export.scoring import read_split  # noqa: E402
from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.evaluate import protocol_scores  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.metrics import equal_error_rate, frr_at_far  # noqa: E402

SEARCH = (-10.0, 0.0, 10.0)
MARGINS = (0.5, 1.0, 2.0)
RULES = ("upright", "max", "cosine-picked", "mean") + tuple(f"upright+{m:g}" for m in MARGINS)


def apply_rule(rule: str, z: np.ndarray, cos: np.ndarray, upright: int) -> np.ndarray:
    """One score a query from its per-angle log-odds ``z`` and mean cosines ``cos`` (angles × N)."""
    if rule == "upright":
        return z[upright]
    if rule == "max":
        return z.max(axis=0)
    if rule == "cosine-picked":
        return z[cos.argmax(axis=0), np.arange(z.shape[1])]
    if rule == "mean":
        return z.mean(axis=0)
    margin = float(rule.split("+", 1)[1])
    turned = np.delete(z, upright, axis=0).max(axis=0)
    return np.where(turned > z[upright] + margin, turned, z[upright])


def scores_by_angle(pipe: Pipeline, upright: tuple, variants: list, writers, kinds, seed: int):
    """Per angle, the aligned (genuine, skilled, random) log-odds and mean cosines of one draw."""
    emb, ink = upright
    z, c = [], []
    for v_emb, v_ink in variants:
        ps = protocol_scores(emb, writers, kinds, 5, seed=seed, scorer=_LogOdds(pipe.scorer), ink=ink,
                             query_variants=[(v_emb, v_ink)])
        pc = protocol_scores(emb, writers, kinds, 5, seed=seed, query_embeddings=v_emb)
        z.append((ps.genuine, ps.skilled, ps.random))
        c.append((pc.genuine, pc.skilled, pc.random))
    return ([np.stack([a[k] for a in z]) for k in range(3)], [np.stack([a[k] for a in c]) for k in range(3)])


def evaluate_fold(fold: int, bundle: Path, draws: int) -> dict:
    pipe = Pipeline(bundle, PipelineOptions(query_rotations=SEARCH, threshold=0.5))
    if pipe.scorer is None:
        raise SystemExit(f"{bundle}: no learned scorer in its manifest")
    rows = read_split(split_dir(fold) / "sigcomp2011_dutch_val.csv")
    images = [load_image(p) for p, _, _ in rows]
    writers, kinds = [w for _, w, _ in rows], [k for _, _, k in rows]
    upright = describe_variants(pipe, images, upright_only=True)[0]
    turned = [rotate(img, np.random.default_rng(1000 + i)) for i, img in enumerate(images)]
    up = SEARCH.index(0.0)
    out: dict = {"fold": fold, "bundle": str(bundle), "draws": draws}
    for condition, imgs in (("clean", images), ("rotated", turned)):
        variants = describe_variants(pipe, imgs)
        per_rule = {r: [] for r in RULES}
        for seed in range(draws):
            z, c = scores_by_angle(pipe, upright, variants, writers, kinds, seed)
            for r in RULES:
                g, s, x = (apply_rule(r, z[k], c[k], up) for k in range(3))
                per_rule[r].append([equal_error_rate(g, s)[0], equal_error_rate(g, x)[0], frr_at_far(g, x, 0.01)])
        out[condition] = {r: dict(zip(("eer_skilled", "eer_random", "frr_at_far1_random"),
                                      np.mean(v, axis=0).tolist())) for r, v in per_rule.items()}
    return out


def show(k: int, fold: dict) -> None:
    for cond in ("clean", "rotated"):
        print(f"fold {k} {cond:8s} " + "  ".join(
            f"{r} {100 * v['eer_skilled']:.1f}/{100 * v['eer_random']:.1f}" for r, v in fold[cond].items()), flush=True)


def main(argv=None) -> int:
    args, folds = evaluate_folds(__doc__, argv, evaluate_fold, show)
    mean = {cond: {r: {m: float(np.mean([f[cond][r][m] for f in folds]))
                       for m in ("eer_skilled", "eer_random", "frr_at_far1_random")} for r in RULES}
            for cond in ("clean", "rotated")}
    for cond in ("clean", "rotated"):
        for r in RULES:
            v = mean[cond][r]
            print(f"mean {cond:8s} {r:14s} skilled {100 * v['eer_skilled']:5.2f}  random {100 * v['eer_random']:5.2f}"
                  f"  FRR@random FAR 1 % {100 * v['frr_at_far1_random']:5.1f}")
    if args.out:
        args.out.write_text(json.dumps({"search_angles": list(SEARCH), "references": 5, "folds": folds, "mean": mean},
                                       indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
