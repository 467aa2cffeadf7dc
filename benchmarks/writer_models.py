"""Scoring an embedding against a writer's references with the help of a background of other writers.

    python benchmarks/writer_models.py --embedder 0=sigedge/models/default \\
        --embedder 1=runs/embedder-fold1/bundle --embedder 2=… --embedder 3=… \\
        --out benchmarks/results/writer-models.json

The shipped scoring compares a query with the references alone (their mean cosine, and the
learned scorer's features). Speaker verification scores x-vectors better with a back-end
that knows the population: centring on the population mean, whitening by the within-speaker
covariance (WCCN), or a small classifier per enrolled speaker against background speakers.
Offline signature verification did the same with writer-dependent SVMs on SigNet features
(Hafemann et al., 2017). Each needs only embeddings of other writers, which a bundle could
carry (a few hundred vectors), not retraining the embedder.

The background here is (by default; ``--background-source synthetic`` or ``both`` uses
procedural signers the embedder never saw instead or as well) the fold's **training** writers' genuine signatures (SigComp, SSBI,
cross-media), the embedder's own, so never a validation writer. Trials follow ``sigedge
evaluate``: 5 seeded references per validation writer, the rest of its genuines, its skilled
forgeries, and the other validation writers' genuines of the collection as random
impostors; upright queries, int8 embeddings; several reference draws.

Methods (higher is more genuine):

* ``cosine``: mean cosine to the references (the plain score);
* ``centred``: the same after subtracting the background mean and re-normalising;
* ``wccn``: the same after centring and whitening by the background's within-writer
  covariance (ridge ``--shrink`` towards the identity, as a share of its mean variance);
* ``wd-lda``: a per-writer linear direction, the whitened difference between the
  references' mean and the background mean, scored as the query's projection on it minus the
  references' mean projection, over the references' spread on it;
* ``wd-lda-raw``: the projection alone, without the references' mean and spread;
* ``wd-lda-unwhitened``: ``wd-lda`` in the centred space, without the whitening;
* ``z-cosine``: no background, a per-writer z-norm of the mean cosine by the references'
  own pairwise cosines (their mean and spread);
* ``forgery-subspace``: in the whitened space, the query's squared distance from the references'
  mean within the ``--forgery-dims`` directions along which the training writers' skilled
  forgeries stray furthest from their writer's genuine mean (negated); ``-z``: over the
  references' own mean squared distance there;
* ``wd-logistic``: a per-writer logistic regression, the references against the background
  (the references weigh as much as the background; ridge 1 on standardised inputs), scored
  by its log-odds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learned_scorer import read_fold  # noqa: E402

from crossval import split_dir  # noqa: E402

from export.fit_scorer import background_rows, fit_background  # noqa: E402
from export.scoring import fit_logistic, read_split  # noqa: E402

from sigedge import Pipeline, PipelineOptions  # noqa: E402
from sigedge.errors import SigedgeError  # noqa: E402
from sigedge.imageio import load_image  # noqa: E402
from sigedge.metrics import equal_error_rate, frr_at_far  # noqa: E402

log = logging.getLogger("writer_models")
COLLECTIONS = ("sigcomp2011_dutch", "ssbi")
METHODS = ("cosine", "z-cosine", "centred", "wccn", "wd-lda", "wd-lda-raw", "wd-lda-unwhitened", "wd-logistic",
           "forgery-subspace", "forgery-subspace-z")


def read_background(fold: int) -> list[dict]:
    """The fold's training writers' genuine signatures, every collection the embedder trained on:
    the rows ``python -m export.fit_scorer --background`` summarises."""
    return [{"path": str(path.resolve()), "writer": writer} for path, writer, _ in background_rows(split_dir(fold))]


def read_forgery_rows(fold: int) -> list[dict]:
    """The fold's training writers of the collections with skilled forgeries: genuines and forgeries."""
    return [{"path": str(path.resolve()), "writer": f"{coll}/{writer}", "kind": kind} for coll in COLLECTIONS
            for path, writer, kind in read_split(split_dir(fold) / f"{coll}_train.csv")]


def forgery_subspace(bg: "Background", emb: dict[str, np.ndarray], rows: list[dict], dims: int) -> np.ndarray:
    """(D, dims): in the whitened space, the directions along which the training writers' skilled
    forgeries stray furthest from their writer's genuine mean (top eigenvectors of the forgeries'
    scatter about it; the whitening already scales each direction by genuine variation)."""
    deviations = []
    for w in sorted({r["writer"] for r in rows}):
        g = [emb[r["path"]] for r in rows if r["writer"] == w and r["kind"] == "genuine" and r["path"] in emb]
        f = [emb[r["path"]] for r in rows if r["writer"] == w and r["kind"] == "forgery" and r["path"] in emb]
        if len(g) < 2 or not f:
            continue
        deviations.append(bg.whitened(np.stack(f)) - bg.whitened(np.stack(g)).mean(axis=0))
    d = np.vstack(deviations)
    vals, vecs = np.linalg.eigh(d.T @ d / len(d))
    return vecs[:, np.argsort(vals)[::-1][:dims]]


def synthetic_background(pipe: Pipeline, signers: int, seed: int = 7) -> tuple[list[np.ndarray], list[str]]:
    """Embeddings of the genuine samples of ``signers`` procedural signers (``training.synthsig``,
    8 each), rendered dark ink on white paper, and their signer ids."""
    from training.synthsig import make_synthetic_set

    synth = make_synthetic_set(signers, genuine=8, forgeries=0, seed=seed)
    vectors, writers = [], []
    for canvas, who in zip(synth.canvases, synth.signer):
        try:
            vectors.append(pipe.embed(255 - canvas).astype(np.float64))
        except SigedgeError:
            continue
        writers.append(f"synthetic/{who}")
    return vectors, writers


def embed_all(pipe: Pipeline, paths: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for p in paths:
        try:
            out[p] = pipe.embed(load_image(p)).astype(np.float64)
        except SigedgeError as e:  # no ink: left out and logged
            log.warning("%s: %s", p, e)
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


class Background:
    """Population statistics of the background embeddings (the runtime's
    :class:`sigedge.scoring.ScorerBackground`, fitted as ``export/fit_scorer.py`` does)."""

    def __init__(self, vectors: np.ndarray, writers: list[str], shrink: float):
        self.vectors = vectors
        self.fitted = fit_background(vectors, writers, shrink)
        self.mean, self.whitened_mean = self.fitted.mean, self.fitted.whitened_mean

    def centred(self, x: np.ndarray) -> np.ndarray:
        return unit(x - self.mean)

    def whitened(self, x: np.ndarray) -> np.ndarray:
        return self.fitted.whitened(x)


def score_writer(bg: Background, refs: np.ndarray, queries: np.ndarray,
                 subspace: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {"cosine": (unit(queries) @ unit(refs).T).mean(axis=1),
           "centred": (bg.centred(queries) @ bg.centred(refs).T).mean(axis=1),
           "wccn": (bg.whitened(queries) @ bg.whitened(refs).T).mean(axis=1)}
    proj_q, _ = bg.fitted.projections(queries, refs)
    proj_r, _ = bg.fitted.projections(refs, refs)
    out["wd-lda"] = (proj_q - proj_r.mean()) / (proj_r.std() + 0.05)
    out["wd-lda-raw"] = proj_q
    cr, cq, cb = bg.centred(refs), bg.centred(queries), bg.centred(bg.vectors)
    plain = unit(cr.mean(axis=0) - cb.mean(axis=0))
    out["wd-lda-unwhitened"] = (cq @ plain - (cr @ plain).mean()) / ((cr @ plain).std() + 0.05)
    ur = unit(refs)
    i, j = np.triu_indices(len(refs), k=1)
    own = np.einsum("pd,pd->p", ur[i], ur[j])
    out["z-cosine"] = (out["cosine"] - own.mean()) / (own.std() + 0.05)
    x = np.vstack([refs, bg.vectors])
    y = np.r_[np.ones(len(refs)), np.zeros(len(bg.vectors))]
    weight = np.r_[np.full(len(refs), len(bg.vectors) / len(refs)), np.ones(len(bg.vectors))]
    coef, intercept = fit_logistic(x, y, weight, l2=1.0)
    out["wd-logistic"] = queries @ coef + intercept
    if subspace is not None:
        wr, wq = bg.whitened(refs), bg.whitened(queries)
        centre = wr.mean(axis=0)
        far_q = (((wq - centre) @ subspace) ** 2).sum(axis=1)
        far_r = (((wr - centre) @ subspace) ** 2).sum(axis=1).mean()
        out["forgery-subspace"] = -far_q
        out["forgery-subspace-z"] = -far_q / (far_r + 1e-3)
    return out


def evaluate_fold(fold: int, emb: dict[str, np.ndarray], bg: Background, refs: int, draws: int,
                  subspace: np.ndarray | None = None) -> dict:
    val = read_fold(fold)["val"]
    result: dict = {}
    for coll in COLLECTIONS:
        rows = [r for r in val if r["collection"] == coll and r["path"] in emb]
        writers = sorted({r["writer"] for r in rows})
        genuine = {w: [r["path"] for r in rows if r["writer"] == w and r["kind"] == "genuine"] for w in writers}
        runs = {m: [] for m in METHODS}
        for d in range(draws):
            rng = np.random.default_rng(d)
            scores = {m: [] for m in METHODS}
            kinds: list[str] = []
            for w in writers:
                gen = genuine[w]
                if len(gen) <= refs:
                    continue
                chosen = [gen[i] for i in sorted(rng.choice(len(gen), refs, replace=False))]
                queries = ([(p, "genuine") for p in gen if p not in chosen]
                           + [(r["path"], "skilled") for r in rows if r["writer"] == w and r["kind"] == "forgery"]
                           + [(p, "random") for v in writers if v != w for p in genuine[v]])
                s = score_writer(bg, np.stack([emb[p] for p in chosen]), np.stack([emb[p] for p, _ in queries]),
                                 subspace)
                for m in METHODS:
                    scores[m].append(s[m])
                kinds += [k for _, k in queries]
            kind = np.array(kinds)
            for m in METHODS:
                sc = np.concatenate(scores[m])
                g, sk, ra = sc[kind == "genuine"], sc[kind == "skilled"], sc[kind == "random"]
                runs[m].append({"eer_skilled": equal_error_rate(g, sk)[0], "eer_random": equal_error_rate(g, ra)[0],
                                "frr_at_far1_skilled": frr_at_far(g, sk, 0.01)})
        result[coll] = {m: {k: float(np.mean([r[k] for r in runs[m]])) for k in runs[m][0]} | {
            "eer_skilled_draw0": runs[m][0]["eer_skilled"]} for m in METHODS}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", action="append", required=True, metavar="K=BUNDLE",
                    help="fold K's bundle (trained without fold K's validation writers)")
    ap.add_argument("--draws", type=int, default=3, help="reference draws per writer (seeds 0..N-1)")
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--shrink", type=float, default=0.1)
    ap.add_argument("--background-source", choices=("training", "synthetic", "both"), default="training",
                    help="whose genuine signatures make the background: the fold's training writers, "
                         "procedural signers the embedder never saw (training/synthsig.py), or both")
    ap.add_argument("--synthetic-signers", type=int, default=300)
    ap.add_argument("--forgery-dims", type=int, default=16,
                    help="dimensions of the forgery subspace (forgery-subspace methods)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = {"command": "python benchmarks/writer_models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "refs": args.refs, "draws": args.draws, "shrink": args.shrink, "forgery_dims": args.forgery_dims,
              "background_source": args.background_source, "synthetic_signers": args.synthetic_signers,
              "folds": {}}
    for spec in args.embedder:
        k, bundle = spec.split("=", 1)
        fold = int(k)
        t0 = time.perf_counter()
        pipe = Pipeline(bundle, PipelineOptions(precision="int8"))
        background = read_background(fold)
        val_paths = sorted({r["path"] for r in read_fold(fold)["val"]})
        forgery_rows = read_forgery_rows(fold)
        emb = embed_all(pipe, sorted(set(val_paths + [r["path"] for r in background] + [r["path"] for r in forgery_rows])))
        kept = [r for r in background if r["path"] in emb]
        vectors, writers = [emb[r["path"]] for r in kept], [r["writer"] for r in kept]
        if args.background_source != "training":
            synth_vectors, synth_writers = synthetic_background(pipe, args.synthetic_signers)
            if args.background_source == "synthetic":
                vectors, writers = [], []
            vectors, writers = vectors + synth_vectors, writers + synth_writers
        bg = Background(np.stack(vectors), writers, args.shrink)
        subspace = forgery_subspace(bg, emb, forgery_rows, args.forgery_dims)
        report["folds"][k] = evaluate_fold(fold, emb, bg, args.refs, args.draws, subspace)
        report["folds"][k]["background"] = len(kept)
        log.info("fold %d: %d background signatures, %.0f s", fold, len(kept), time.perf_counter() - t0)
        for coll in COLLECTIONS:
            for m in METHODS:
                v = report["folds"][k][coll][m]
                print(f"fold {k} {coll[:8]} {m:12s} skilled {100 * v['eer_skilled']:5.1f}  random "
                      f"{100 * v['eer_random']:5.1f}  FRR@FAR1 {100 * v['frr_at_far1_skilled']:5.1f}", flush=True)
    report["mean"] = {coll: {m: {key: float(np.mean([f[coll][m][key] for f in report["folds"].values()]))
                                 for key in ("eer_skilled", "eer_random", "frr_at_far1_skilled")}
                             for m in METHODS} for coll in COLLECTIONS}
    for coll in COLLECTIONS:
        for m in METHODS:
            v = report["mean"][coll][m]
            print(f"mean {coll[:8]} {m:12s} skilled {100 * v['eer_skilled']:5.1f}  random "
                  f"{100 * v['eer_random']:5.1f}  FRR@FAR1 {100 * v['frr_at_far1_skilled']:5.1f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
