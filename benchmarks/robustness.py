"""Robustness of verification to capture conditions: EER under perturbed queries vs clean.

    python benchmarks/robustness.py training/splits/sigcomp2011_dutch_val.csv --refs 5 --out robustness.json

The writer-independent protocol of ``sigedge evaluate`` (same seeded references) is run
once on the clean images and once per perturbation. References stay clean, as enrolled at
the counter; every *query* (genuine, skilled and random) is perturbed, as a signature
captured on a different day and device would be. Perturbations (seeded per image):

* ``rotate``: rotated by a random angle in ±15° (white fill)
* ``scale``: resized by a random factor in 0.5–2×
* ``ink``: ink recoloured to a random blue, red or green pen
* ``background``: gray, textured paper (noise + smooth gradient) behind the ink
* ``jpeg40``: JPEG at quality 40
* ``one_pen``: every ink pixel at one darkness (the ink found as verification finds it, drawn
  at gray 60 with its edge softened): what the pen's darkness and pressure told apart is gone.
  With ``--references-too`` the references are drawn so as well, so that nothing differs but
  the shapes: how much of the clean EER rested on the pens (SigComp's forgers used other pens
  than its writers, model card, "Candidate features for the cross-fitted scorer")

Reports skilled and random EER per condition and the change from clean, in points, for
the bundle's scorer (``results``: its learned scorer over the cosine and ink statistics,
where it has one) and for the plain fused cosine (``results_cosine``), on the same images.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from sigedge import Pipeline, PipelineOptions
from sigedge.cli_common import parse_rotations
from sigedge.errors import SigedgeError, UsageError
from sigedge.evaluate import protocol_scores, report_from_scores
from sigedge.imageio import load_image
from sigedge.normalize import NormalizeOptions, find_ink, to_gray

log = logging.getLogger("robustness")


def _bgr(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def rotate(img, rng):
    h, w = img.shape[:2]
    angle = rng.uniform(-15, 15)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(_bgr(img), m, (nw, nh), borderValue=(255, 255, 255))


def scale(img, rng):
    f = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    h, w = img.shape[:2]
    return cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))),
                      interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def ink(img, rng):
    gray = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    pens = {"blue": (160, 40, 20), "red": (30, 30, 190), "green": (40, 130, 30)}  # BGR
    colour = np.array(list(pens.values())[rng.integers(len(pens))], np.float32)
    darkness = 1.0 - gray[..., None]
    out = 255.0 * (1 - darkness) + colour * darkness
    return np.clip(out, 0, 255).astype(np.uint8)


def background(img, rng):
    gray = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2GRAY).astype(np.float32)
    h, w = gray.shape
    level = rng.uniform(150, 210)
    grad = np.linspace(0, rng.uniform(-25, 25), w, dtype=np.float32)[None, :]
    texture = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 1.5)
    paper = level + grad + texture
    out = np.minimum(paper, gray * (level / 255.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg40(img, rng):
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def one_pen(img, rng):
    _, mask = find_ink(to_gray(img), NormalizeOptions())
    darkness = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7) * (255 - 60)
    return np.clip(255 - darkness, 0, 255).astype(np.uint8)


PERTURBATIONS = {"rotate": rotate, "scale": scale, "ink": ink, "background": background, "jpeg40": jpeg40,
                 "one_pen": one_pen}


def describe_variants(pipe: Pipeline, images: list[np.ndarray],
                      upright_only: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(embeddings, ink statistics) of the images at each of the pipeline's query rotations
    (``Pipeline.describe_query``; with ``upright_only``, only upright, ``Pipeline.describe``,
    one entry). An image without ink found gets a zero vector (cosine 0 to everything, so it
    is scored as far from every writer) and the mean ink statistics of the images that had
    ink (a stand-in that favours no particular writer)."""
    n = 1 if upright_only else len(pipe.query_rotations)
    emb, ink, missing = [[] for _ in range(n)], [[] for _ in range(n)], []
    for i, img in enumerate(images):
        try:
            for a, f in enumerate([pipe.describe(img)] if upright_only else pipe.describe_query(img)):
                emb[a].append(f.embedding)
                ink[a].append(f.ink)
        except SigedgeError:
            for a in range(n):
                emb[a].append(np.zeros(pipe.dim, np.float32))
                ink[a].append(None)
            missing.append(i)
    if missing:
        log.info("%d image(s) without ink found", len(missing))
    out = []
    for a in range(n):
        found = [k for k in ink[a] if k is not None]
        if not found:
            raise SystemExit("no image with ink found")
        filler = np.mean(found, axis=0).astype(np.float32)
        out.append((np.stack(emb[a]), np.stack([filler if k is None else k for k in ink[a]])))
    return out


def describe_all(pipe: Pipeline, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and ink statistics of the upright images (as :func:`describe_variants`)."""
    return describe_variants(pipe, images, upright_only=True)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--precision", default="int8", choices=("int8", "float"))
    ap.add_argument("--deskew", action="store_true",
                    help="turn the normaliser's deskew on (references and queries alike), which the bundle leaves off")
    ap.add_argument("--query-rotations", default=None,
                    help="angles (degrees, comma-separated, with 0) every query is also scored at, its best counting "
                         "(default: the bundle's); references stay upright")
    ap.add_argument("--perturbations", default=",".join(PERTURBATIONS),
                    help="which perturbations, comma-separated (default: all: %(default)s)")
    ap.add_argument("--references-too", action="store_true",
                    help="perturb the references as well as the queries (default: references stay clean)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    chosen = [n.strip() for n in args.perturbations.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(PERTURBATIONS))
    if unknown or not chosen:
        ap.error(f"--perturbations: choose among {', '.join(PERTURBATIONS)} (got {args.perturbations!r})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        rotations = parse_rotations(args.query_rotations)
    except UsageError as exc:
        ap.error(str(exc))
    rows = list(csv.DictReader(open(args.labels, newline="", encoding="utf-8")))
    writers, kinds = [r["writer"] for r in rows], [r["kind"] for r in rows]
    images = [load_image(args.labels.parent / r["path"]) for r in rows]
    pipe = Pipeline(args.bundle, PipelineOptions(precision=args.precision, query_rotations=rotations))
    if args.deskew:
        pipe.normalize_options = dataclasses.replace(pipe.normalize_options, deskew=True)
    clean_variants = describe_variants(pipe, images)
    clean, clean_ink = clean_variants[pipe.query_rotations.index(0.0)]  # the references, upright
    scorers = {"results": pipe.scorer, "results_cosine": None} if pipe.scorer is not None else {"results": None}

    def report(variants: list, scorer, references: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        # The protocol draws the same references with the same seed; only queries change
        # (and, with --references-too, the references' descriptions)
        refs, refs_ink = references or (clean, clean_ink)
        scores = protocol_scores(refs, writers, kinds, args.refs, seed=args.seed, scorer=scorer, ink=refs_ink,
                                 query_variants=variants)
        rep = report_from_scores(scores, args.refs)
        return {"eer_skilled": rep.eer_skilled, "eer_random": rep.eer_random}

    results = {key: {"clean": report(clean_variants, s)} for key, s in scorers.items()}
    for k, (name, fn) in enumerate(PERTURBATIONS.items()):
        if name not in chosen:
            continue
        rng = np.random.default_rng(args.seed + 1000 * (k + 1))  # the same draws whichever are chosen
        perturbed = describe_variants(pipe, [fn(img, rng) for img in images])
        references = perturbed[pipe.query_rotations.index(0.0)] if args.references_too else None
        for key, s in scorers.items():
            r = results[key][name] = report(perturbed, s, references)
            for m in ("eer_skilled", "eer_random"):
                r[f"delta_{m}_points"] = 100 * (r[m] - results[key]["clean"][m])
            log.info("%s %s: %s", key, name, r)
    out = {"labels": str(args.labels), "references": args.refs, "references_perturbed": args.references_too,
           "precision": args.precision, "deskew": args.deskew,
           "query_rotations": list(pipe.query_rotations), "model_sha256": pipe.model_sha256, "scorer": "learned" if pipe.scorer is not None else "cosine", **results}
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    for key in results:
        print(f"\n{key}\n{'condition':12s} {'skilled EER':>12s} {'random EER':>11s} {'Δ skilled':>10s} "
              f"{'Δ random':>9s}", file=sys.stderr)
        for name, r in results[key].items():
            print(f"{name:12s} {100 * r['eer_skilled']:11.2f}% {100 * r['eer_random']:10.2f}% "
                  f"{r.get('delta_eer_skilled_points', 0):+9.2f} {r.get('delta_eer_random_points', 0):+8.2f}",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
