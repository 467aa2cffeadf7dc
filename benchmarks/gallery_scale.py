#!/usr/bin/env python
"""Gallery at scale: build time, memory, disk, identify latency and recall vs exact search.

For each size (number of reference vectors) a fresh child process:

1. makes synthetic embeddings of the model's dimension (128): writers' centres uniform
   on the unit sphere, ``--refs-per-writer`` samples per writer = centre + Gaussian noise,
   renormalised, with a per-writer noise level drawn so that the cosine between two
   samples of one writer is 0.6-0.8 (measured and reported); queries are fresh samples of
   enrolled writers;
2. bulk-loads them into a gallery's SQLite database (one transaction, straight into the
   gallery's schema; enrolling 200k writers one call at a time is measured separately,
   on a sample, as enrolment latency), then **builds** the hnswlib index the way a
   gallery does when it has none: ``Gallery(path)`` reads every vector from SQLite and
   inserts it (one thread), and saves the index file;
3. times ``identify`` on one thread (``Gallery._identify_embedding``: what
   ``Gallery.identify`` does after embedding the image, without the audit line: the
   index, which holds each writer's mean reference vector, searched for the top-k
   writers by inner product = mean cosine similarity to their references), and the raw
   hnswlib search alone;
4. times exact search in numpy in the same process (one BLAS thread): every reference's
   similarity to the query, averaged per writer (verification's mean fusion), top-k
   writers; the ground truth for recall@1 and recall@10 (share of the exact top-10
   writers the gallery returns);
5. measures RSS (after building, and of a fresh process that opens the saved gallery),
   disk use, open time, and the latency of enrolling new writers one at a time with the
   default durability (synchronous=FULL, audit log on).

``--real`` adds a tier of real embeddings: crops from the shared data set embedded by the
bundled model (augmented copies when there are fewer than ``--real-size``), unless the
model's embeddings are degenerate (the untrained placeholder bundle), which is reported.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/gallery_scale.py --sizes 10000,100000,1000000 \\
        --queries 1000 --out benchmarks/gallery_scale_results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for the exact search too

import numpy as np  # noqa: E402

DIM = 128
REPO = Path(__file__).resolve().parent.parent


class VectorEmbedder:
    """The model's contract for precomputed embeddings (the gallery only needs sha256 + dim)."""

    def __init__(self, dim: int = DIM, sha256: str = "scale-benchmark-synthetic"):
        self.dim = dim
        self.model_sha256 = sha256
        self.threshold = 0.5
        self.fusion = "mean"
        self.bundle = None

    def embed(self, image):  # pragma: no cover
        raise RuntimeError("precomputed embeddings only")

    def verify_embeddings(self, query, references):  # pragma: no cover
        raise RuntimeError("not used")


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    cur = peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return round(cur, 1), round(peak, 1)


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


# ---------------------------------------------------------------------------- data

def real_identity_means(args) -> np.ndarray:
    """L2-normalised mean embedding of each real identity (up to 3 genuine crops each), cached."""
    cache = Path(args.centres_cache)
    if cache.exists():
        return np.load(cache)
    import csv

    from sigedge.errors import SigedgeError
    from sigedge.pipeline import Pipeline

    pipe = Pipeline(args.bundle)
    groups: dict[str, list[Path]] = {}
    root = Path(args.data)
    for ds, key in (("sigcomp2011_dutch", None), ("ssbi", None), ("cross_media_chinese", "name_index")):
        with open(root / ds / "labels.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("kind", "genuine") == "genuine":
                    ident = f"{ds}/{row['writer']}" + (f"/{row[key]}" if key else "")
                    groups.setdefault(ident, []).append(root / ds / row["path"])
    means = []
    for paths in groups.values():
        vecs = []
        for p in paths[:3]:
            try:
                vecs.append(pipe.embed(p))
            except SigedgeError:
                continue
        if vecs:
            m = np.mean(vecs, axis=0)
            means.append(m / np.linalg.norm(m))
    out = np.stack(means).astype(np.float32)
    np.save(cache, out)
    return out


def fitted_centres(args, w: int, rng) -> np.ndarray:
    """Writer centres drawn from a Gaussian fitted to real identities' mean embeddings.

    Real embeddings are far from isotropic (they share a mean direction and occupy fewer
    effective dimensions), which matters for graph search; this keeps that structure.
    """
    real = real_identity_means(args).astype(np.float64)
    mu = real.mean(axis=0)
    cov = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    chol = np.linalg.cholesky(cov)
    centres = np.empty((w, DIM), np.float32)
    for i in range(0, w, 100_000):
        n = min(100_000, w - i)
        block = mu + rng.standard_normal((n, DIM)) @ chol.T
        centres[i:i + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return centres


def synthetic(n_refs: int, refs_per_writer: int, n_queries: int, seed: int, args=None):
    """(references (N, D) grouped by writer, query vectors, query writers, data stats)."""
    rng = np.random.default_rng(seed)
    w = n_refs // refs_per_writer
    if args is not None and args.centres == "fitted":
        centres = fitted_centres(args, w, rng)
    else:
        centres = rng.standard_normal((w, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # cos(sample, sample') ~ 1 / (1 + s^2): s^2 in [0.25, 0.667] gives 0.8 .. 0.6
    sigma = np.sqrt(rng.uniform(0.25, 0.667, w)).astype(np.float32)
    refs = np.empty((w * refs_per_writer, DIM), dtype=np.float32)
    step = 50_000
    for i in range(0, w, step):
        c = centres[i:i + step]
        s = sigma[i:i + step]
        block = np.repeat(c, refs_per_writer, axis=0) + np.repeat(s, refs_per_writer)[:, None] * \
            rng.standard_normal((len(c) * refs_per_writer, DIM)).astype(np.float32) / np.sqrt(DIM)
        refs[i * refs_per_writer:(i + len(c)) * refs_per_writer] = block / np.linalg.norm(block, axis=1, keepdims=True)
    qw = rng.integers(0, w, n_queries)
    q = centres[qw] + sigma[qw][:, None] * rng.standard_normal((n_queries, DIM)).astype(np.float32) / np.sqrt(DIM)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    stats = data_stats(refs, refs_per_writer, rng)
    return refs, q.astype(np.float32), qw, stats


def data_stats(refs: np.ndarray, r: int, rng) -> dict:
    w = len(refs) // r
    pick = rng.choice(w, min(w, 2000), replace=False)
    intra = []
    for i in pick:
        block = refs[i * r:(i + 1) * r]
        s = block @ block.T
        intra.extend(s[np.triu_indices(r, 1)].tolist())
    a, b = rng.integers(0, len(refs), (2, 20000))
    keep = (a // r) != (b // r)
    inter = np.einsum("ij,ij->i", refs[a[keep]], refs[b[keep]])
    return {"intra_writer_cosine": {"mean": round(float(np.mean(intra)), 3), "p5": round(float(np.percentile(intra, 5)), 3),
                                    "p95": round(float(np.percentile(intra, 95)), 3)},
            "inter_writer_cosine": {"mean": round(float(np.mean(inter)), 3), "p99": round(float(np.percentile(inter, 99)), 3),
                                    "max": round(float(np.max(inter)), 3)}}


# ---------------------------------------------------------------------------- gallery

def options(args, **kw):
    from sigedge.gallery import GalleryOptions

    base = dict(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef_search,
                identify_threshold=0.0, identify_fusion="mean",
                threads=1, audit=True, audit_reads=False, index_save_every=10**9)
    base.update(kw)
    return GalleryOptions(**base)


def bulk_load(path: Path, refs: np.ndarray, writer_of: np.ndarray, emb, args) -> float:
    """Create a gallery and insert every vector in one transaction (its own schema)."""
    from sigedge.gallery import Gallery

    Gallery(path, emb, options=options(args)).close()
    t0 = time.perf_counter()
    conn = sqlite3.connect(path / "gallery.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    now = time.time()
    n_writers = int(writer_of.max()) + 1
    conn.executemany("INSERT INTO writers(id, lookup, name, ref, created) VALUES (?, ?, ?, ?, ?)",
                     ((i + 1, f"writer-{i:07d}", f"writer-{i:07d}".encode(), secrets.token_hex(8), now)
                      for i in range(n_writers)))
    conn.executemany("INSERT INTO samples(writer, generation, enrolled, vector) VALUES (?, 1, ?, ?)",
                     ((int(writer_of[i]) + 1, now, refs[i].astype("<f4").tobytes()) for i in range(len(refs))))
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'generation'")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for p in path.glob("index-*"):
        p.unlink()
    return time.perf_counter() - t0


def exact_identify(refs: np.ndarray, writer_of: np.ndarray, counts: np.ndarray, starts: np.ndarray,
                   q: np.ndarray, k: int) -> np.ndarray:
    """Top-k writers by mean similarity to all their references (refs grouped by writer)."""
    sims = refs @ q
    scores = np.add.reduceat(sims, starts) / counts
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def measure_open(path: str, args) -> dict:
    """Run in a fresh process: open a saved gallery, report time and memory."""
    from sigedge.gallery import Gallery

    r0 = rss_mb()[0]
    t0 = time.perf_counter()
    g = Gallery(path, VectorEmbedder(DIM), options=options(args), create=False)
    t = time.perf_counter() - t0
    cur, peak = rss_mb()
    g._store.close()  # no close(): nothing to save, keep the measurement read-only
    return {"open_s": round(t, 2), "rss_mb": cur, "rss_peak_mb": peak, "rss_before_open_mb": r0}


def run_tier(name: str, refs: np.ndarray, writer_of: np.ndarray, queries: np.ndarray, query_writers: np.ndarray,
             stats: dict, args) -> dict:
    from sigedge.gallery import Gallery

    k = args.k
    work = Path(tempfile.mkdtemp(prefix=f"sigedge-scale-{name}-", dir=args.work_dir))
    path = work / "gallery"
    emb = VectorEmbedder(refs.shape[1])
    order = np.argsort(writer_of, kind="stable")
    refs, writer_of = refs[order], writer_of[order]
    starts = np.flatnonzero(np.r_[True, writer_of[1:] != writer_of[:-1]])
    counts = np.diff(np.r_[starts, len(writer_of)])
    n, n_writers = len(refs), len(starts)
    out: dict = {"tier": name, "references": n, "writers": n_writers, "dim": int(refs.shape[1]),
                 "queries": len(queries), "k": k, "data": stats}
    print(f"[{name}] bulk-loading {n} references of {n_writers} writers", file=sys.stderr, flush=True)
    out["db_load_s"] = round(bulk_load(path, refs, writer_of, emb, args), 2)
    np.save(work / "refs.npy", refs)
    del refs
    rss_before = rss_mb()[0]
    print(f"[{name}] building the index", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    g = Gallery(path, emb, options=options(args))
    out["build_s"] = round(time.perf_counter() - t0, 2)
    cur, peak = rss_mb()
    out["rss_after_build_mb"] = cur
    out["rss_growth_build_mb"] = round(cur - rss_before, 1)
    t0 = time.perf_counter()
    g.save()
    out["index_save_s"] = round(time.perf_counter() - t0, 2)
    sizes = {p.name: p.stat().st_size for p in path.iterdir() if p.is_file()}
    out["disk_bytes"] = {"total": sum(sizes.values()),
                         "database": sum(v for kk, v in sizes.items() if kk.startswith("gallery.db")),
                         "index": sum(v for kk, v in sizes.items() if kk.startswith("index-"))}
    print(f"[{name}] exact search (ground truth)", file=sys.stderr, flush=True)
    refs = np.load(work / "refs.npy")
    ex_times, truth = [], []
    for q in queries:
        t0 = time.perf_counter()
        top = exact_identify(refs, writer_of, counts, starts, q, k)
        ex_times.append(time.perf_counter() - t0)
        truth.append([int(writer_of[starts[i]]) for i in top])
    del refs
    out["exact_numpy_ms"] = {"p50": round(pct(ex_times, 50), 3), "p99": round(pct(ex_times, 99), 3)}
    out["exact_top1_is_true_writer"] = round(float(np.mean([b[0] == w for b, w in zip(truth, query_writers)])), 4)
    base = g.options
    sweep = sorted(set([args.ef_search, *(int(x) for x in args.ef_sweep.split(",") if x)]))
    modes = [(f"hnsw ef={ef}", dataclasses.replace(base, ef_search=ef, exact_search_limit=0)) for ef in sweep]
    modes.append(("exact (numpy over writers' mean vectors)", dataclasses.replace(base, exact_search_limit=10**12)))
    out["modes"] = {}
    for label, opts in modes:
        print(f"[{name}] {len(queries)} identify queries, {label}", file=sys.stderr, flush=True)
        g.options = opts
        for q in queries[:20]:
            g._identify_embedding(q, k)
        times, got = [], []
        for q in queries:
            t0 = time.perf_counter()
            m = g._identify_embedding(q, k)
            times.append(time.perf_counter() - t0)
            got.append([int(x.writer_id.split("-")[1]) for x in m])
        out["modes"][label] = {
            "identify_ms": {"p50": round(pct(times, 50), 3), "p99": round(pct(times, 99), 3),
                            "mean": round(float(np.mean(times) * 1e3), 3)},
            "recall_at_1": round(float(np.mean([a[:1] == b[:1] for a, b in zip(got, truth)])), 4),
            "recall_at_10": round(float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(got, truth)])), 4),
            "top1_is_true_writer": round(float(np.mean([a[0] == w for a, w in zip(got, query_writers)])), 4)}
    g.options = base
    index = g._index
    index.set_ef(max(args.ef_search, k))
    raw_times = []
    for q in queries:
        t0 = time.perf_counter()
        index.knn_query(q, k=k, num_threads=1)
        raw_times.append(time.perf_counter() - t0)
    out["hnsw_knn_query_only_ms"] = {"p50": round(pct(raw_times, 50), 3), "p99": round(pct(raw_times, 99), 3),
                                     "ef": max(args.ef_search, k)}
    out["index"] = {"elements": int(index.element_count), "M": args.M, "ef_construction": args.ef_construction}
    out["default_policy"] = ("exact" if n_writers <= base.exact_search_limit else f"hnsw ef={args.ef_search}")
    g.close()

    print(f"[{name}] open from file in a fresh process", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, __file__, "--measure-open", str(path), *passthrough(args)],
                          capture_output=True, text=True, env=child_env())
    out["open_saved"] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
    if args.enrol_sample:
        print(f"[{name}] enrolling {args.enrol_sample} writers one by one", file=sys.stderr, flush=True)
        from sigedge.gallery import GalleryOptions

        g = Gallery(path, emb, options=GalleryOptions(M=args.M, ef_construction=args.ef_construction,
                                                      identify_threshold=0.0))
        rng = np.random.default_rng(99)
        lat = []
        for i in range(args.enrol_sample):
            v = rng.standard_normal((args.refs_per_writer, emb.dim)).astype(np.float32)
            t0 = time.perf_counter()
            g._enroll_embeddings(f"new-{i}", v)
            lat.append(time.perf_counter() - t0)
        g.close()
        out["enrol_ms"] = {"p50": round(pct(lat, 50), 2), "p99": round(pct(lat, 99), 2),
                           "refs_per_call": args.refs_per_writer, "synchronous": "FULL", "audit": True}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        out["work_dir"] = str(work)
    return out


# ---------------------------------------------------------------------------- real embeddings

def real_tier(args) -> dict:
    import csv

    import cv2

    from sigedge.errors import SigedgeError
    from sigedge.pipeline import Pipeline

    pipe = Pipeline(args.bundle)
    root = Path(args.data)
    items: list[tuple[str, Path]] = []
    for ds, key in (("sigcomp2011_dutch", None), ("ssbi", None), ("cross_media_chinese", "name_index")):
        labels = root / ds / "labels.csv"
        if not labels.exists():
            continue
        with open(labels, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("kind", "genuine") != "genuine":
                    continue
                ident = f"{ds}/{row['writer']}" + (f"/{row[key]}" if key else "")
                items.append((ident, root / ds / row["path"]))
    info = {"model_sha256": pipe.model_sha256, "bundle": f"{pipe.bundle.name} {pipe.bundle.version}",
            "images_found": len(items)}
    if not items:
        return {"tier": "real", "skipped": f"no labelled images under {root}", **info}
    rng = np.random.default_rng(args.seed)
    probe = [items[i] for i in rng.choice(len(items), min(40, len(items)), replace=False)]
    pv = []
    for _, p in probe:
        try:
            pv.append(pipe.embed(p))
        except SigedgeError:
            pass
    pv = np.stack(pv)
    zero = float(np.mean(np.linalg.norm(pv, axis=1) < 1e-6))
    sims = pv @ pv.T
    mean_cos = float(np.mean(sims[np.triu_indices(len(pv), 1)]))
    info.update(probe_zero_fraction=round(zero, 3), probe_mean_pairwise_cosine=round(mean_cos, 3))
    if zero > 0.5 or mean_cos > 0.98:
        return {"tier": "real", "skipped": "the bundled model's embeddings are degenerate (all-zero or identical: "
                "the untrained placeholder bundle); rerun with --real once a trained bundle ships", **info}
    # Hold out one image per identity as a query; the rest (and augmented copies) are references.
    by_ident: dict[str, list[Path]] = {}
    for ident, p in items:
        by_ident.setdefault(ident, []).append(p)
    idents = sorted(i for i, ps in by_ident.items() if len(ps) >= 2)
    ident_no = {ident: n for n, ident in enumerate(idents)}
    ref_items = [(ident_no[i], p) for i in idents for p in by_ident[i][1:]]
    query_items = [(ident_no[i], by_ident[i][0]) for i in idents]
    refs, ref_w = [], []
    t0 = time.perf_counter()
    for w, p in ref_items:
        try:
            refs.append(pipe.embed(p))
            ref_w.append(w)
        except SigedgeError:
            pass
    augmented = 0
    while len(refs) < args.real_size:
        w, p = ref_items[int(rng.integers(len(ref_items)))]
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        h, wd = img.shape
        m = cv2.getRotationMatrix2D((wd / 2, h / 2), float(rng.uniform(-4, 4)), float(rng.uniform(0.9, 1.1)))
        m[0, 1] += float(rng.uniform(-0.1, 0.1))
        img = cv2.warpAffine(img, m, (wd, h), borderValue=255)
        try:
            refs.append(pipe.embed(img))
            ref_w.append(w)
            augmented += 1
        except SigedgeError:
            pass
    embed_s = time.perf_counter() - t0
    qs, qw = [], []
    for w, p in query_items[: args.queries]:
        try:
            qs.append(pipe.embed(p))
            qw.append(w)
        except SigedgeError:
            pass
    info.update(real_references=len(refs) - augmented, augmented_references=augmented,
                identities=len(idents), embed_s=round(embed_s, 1))
    refs_a = np.stack(refs).astype(np.float32)
    stats = data_stats_real(refs_a, np.asarray(ref_w), rng)
    out = run_tier("real", refs_a, np.asarray(ref_w), np.stack(qs).astype(np.float32), np.asarray(qw),
                   stats, args)
    out.update(info)
    return out


def data_stats_real(refs, w, rng) -> dict:
    a, b = rng.integers(0, len(refs), (2, 50000))
    cos = np.einsum("ij,ij->i", refs[a], refs[b])
    same = (w[a] == w[b]) & (a != b)
    return {"intra_writer_cosine": {"mean": round(float(cos[same].mean()), 3) if same.any() else None},
            "inter_writer_cosine": {"mean": round(float(cos[~same].mean()), 3),
                                    "p99": round(float(np.percentile(cos[~same], 99)), 3)}}


# ---------------------------------------------------------------------------- driver

def passthrough(args) -> list[str]:
    return ["--M", str(args.M), "--ef-construction", str(args.ef_construction), "--ef-search", str(args.ef_search),
            "--ef-sweep", args.ef_sweep,
            "--k", str(args.k), "--queries", str(args.queries),
            "--refs-per-writer", str(args.refs_per_writer), "--seed", str(args.seed),
            "--enrol-sample", str(args.enrol_sample), "--real-size", str(args.real_size), "--data", args.data,
            *(["--work-dir", args.work_dir] if args.work_dir else []), *(["--keep"] if args.keep else []),
            *(["--bundle", args.bundle] if args.bundle else []),
            "--centres", args.centres, "--centres-cache", args.centres_cache]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="Reference counts, comma-separated.")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--refs-per-writer", type=int, default=5)
    ap.add_argument("--M", type=int, default=32, help="hnswlib graph degree (the gallery's default).")
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=256, help="The gallery's default.")
    ap.add_argument("--ef-sweep", default="64,128,512,1024", help="Other ef values measured on the same index.")
    ap.add_argument("--enrol-sample", type=int, default=200, help="Writers enrolled one by one to time enrolment.")
    ap.add_argument("--real", action="store_true", help="Also a tier of real embeddings (see --data, --bundle).")
    ap.add_argument("--real-size", type=int, default=10000)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--centres", choices=("isotropic", "fitted"), default="isotropic",
                    help="Writer centres uniform on the sphere, or from a Gaussian fitted to real identities' "
                         "mean embeddings (embedded once with the bundle, cached in --centres-cache).")
    ap.add_argument("--centres-cache", default=str(Path(tempfile.gettempdir()) / "sigedge-real-identity-means.npy"))
    ap.add_argument("--work-dir", default=None, help="Where galleries are built (default: the temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the galleries built.")
    ap.add_argument("--out", help="Write all results as JSON here.")
    ap.add_argument("--tier", help=argparse.SUPPRESS)
    ap.add_argument("--measure-open", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.measure_open:
        print(json.dumps(measure_open(args.measure_open, args)))
        return 0
    if args.tier:
        if args.tier == "real":
            result = real_tier(args)
        else:
            n = int(args.tier)
            refs, q, qw, stats = synthetic(n, args.refs_per_writer, args.queries, args.seed, args)
            writer_of = np.arange(len(refs)) // args.refs_per_writer
            result = run_tier(f"synthetic-{args.centres}-{n}", refs, writer_of, q, qw, stats, args)
        print(json.dumps(result))
        return 0

    tiers = [s.strip() for s in args.sizes.split(",") if s.strip()] + (["real"] if args.real else [])
    results = []
    import hnswlib

    meta = {"command": " ".join(["python", "benchmarks/gallery_scale.py", *(argv if argv is not None else sys.argv[1:])]),
            "hnswlib": getattr(hnswlib, "__version__", "0.8"), "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "params": {"M": args.M, "ef_construction": args.ef_construction, "ef_search": args.ef_search,
                       "k": args.k,
                       "refs_per_writer": args.refs_per_writer, "threads": 1},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for tier in tiers:
        t0 = time.time()
        proc = subprocess.run([sys.executable, __file__, "--tier", tier, *passthrough(args)], capture_output=True,
                              text=True, env=child_env())
        sys.stderr.write(proc.stderr[-3000:])
        if proc.returncode != 0:
            results.append({"tier": tier, "error": proc.stderr[-2000:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[-1]["tier_wall_s"] = round(time.time() - t0, 1)
        if args.out:
            Path(args.out).write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
        print(json.dumps(results[-1], indent=2), flush=True)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
