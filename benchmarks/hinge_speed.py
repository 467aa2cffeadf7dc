"""Time of the contour hinge, and of describing a signature, the plain way and the way it ships.

    python benchmarks/hinge_speed.py --out benchmarks/results/hinge-speed.json

The shipped scorer measures the contour hinge (``sigedge.hinge``) of every query at each of
its three angles, and of every reference at enrolment. Two things made it slow: Zhang-Suen
thinning over the whole image at each sub-iteration, and finding the ink a second time
after normalisation had found it. Both ways run here in one process, alternating, on the
same crops (the bundled example images and generated signatures, each cleaned as the
packaged pipeline cleans it):

- ``thin``: :func:`sigedge.hinge._thin_dense` (whole image) against :func:`sigedge.hinge.thin`
  (only the pixels still ink), on each crop's ink mask at the hinge's height;
- ``describe``: the pipeline's description of one crop at one angle (canvas, ink statistics,
  hinge, embedding), the plain way (normalise, then :func:`sigedge.hinge.contour_hinge`
  finding the ink again, thinned densely) against the shipped way
  (:meth:`sigedge.Pipeline._features`: the hinge from the normalisation's ink mask, thinned
  sparsely).

Reports p50 and mean milliseconds of each way, their ratio, and whether both ways give the
same centre lines and the same feature vectors bit for bit (they must: the rule and its
inputs are the same).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sigedge import Pipeline  # noqa: E402
from sigedge.hinge import _ink_mask, _thin_dense, hinge_histograms, thin  # noqa: E402
from sigedge.normalize import normalize_signature  # noqa: E402
from sigedge.scoring import ink_statistics  # noqa: E402
from sigedge.synth import synthetic_signature  # noqa: E402


def crops(pipe: Pipeline, generated: int) -> list[np.ndarray]:
    """The bundled example images and ``generated`` synthetic signatures, cleaned."""
    images = sorted((ROOT / "examples" / "images").glob("*.jpg"))
    out = [pipe._cleaned(p) for p in images]
    out += [pipe._cleaned(synthetic_signature(w, 0, size=(300, 800), jitter=0.5)) for w in range(generated)]
    return out


def plain_features(pipe: Pipeline, cleaned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The description as it was made before: the ink found twice, the thinning dense."""
    spec, opts = pipe.hinge, pipe.normalize_options
    canvas = normalize_signature(cleaned, opts).canvas
    skeleton = cv2.dilate(_thin_dense(_ink_mask(cleaned, spec.height, opts)), np.ones((3, 3), np.uint8))
    ink = np.concatenate([ink_statistics(canvas), hinge_histograms(skeleton, spec.fragments, spec.bins)])
    return pipe.embed_canvas(canvas), ink


def alternate(ways: dict, inputs: list, rounds: int) -> dict:
    """Each way over every input, ``rounds`` times, the ways alternating input by input (after one
    warm-up pass each), so that both see the same machine; ms a call."""
    for fn in ways.values():
        for x in inputs:
            fn(x)
    times = {name: [] for name in ways}
    for r in range(rounds):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for x in inputs:
            for name in order:
                t = time.perf_counter()
                ways[name](x)
                times[name].append((time.perf_counter() - t) * 1000.0)
    return {name: {"p50_ms": float(np.percentile(v, 50)), "mean_ms": float(np.mean(v)), "calls": len(v)}
            for name, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generated", type=int, default=8, help="generated signatures beside the example images")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    pipe = Pipeline()
    if pipe.hinge is None:
        raise SystemExit("the packaged bundle's scorer measures no contour hinge")
    cleaned = crops(pipe, args.generated)
    masks = [_ink_mask(c, pipe.hinge.height, pipe.normalize_options) for c in cleaned]
    same_lines = all(np.array_equal(thin(m), _thin_dense(m)) for m in masks)
    same_features = all(np.array_equal(a, b) for c in cleaned
                        for a, b in zip(plain_features(pipe, c), (pipe._features(c).embedding, pipe._features(c).ink)))
    report = {"crops": len(cleaned), "rounds": args.rounds, "machine": platform.machine(),
              "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
              "same_centre_lines": same_lines, "same_features": same_features}
    for stage, ways, inputs in (("thin", {"dense": _thin_dense, "sparse": thin}, masks),
                                ("describe", {"plain": lambda c: plain_features(pipe, c),
                                              "shipped": pipe._features}, cleaned)):
        timed = alternate(ways, inputs, args.rounds)
        old, new = timed.values()
        timed["ratio_p50"] = old["p50_ms"] / new["p50_ms"]
        timed["ratio_mean"] = old["mean_ms"] / new["mean_ms"]
        report[stage] = timed
        print(f"{stage}: " + ", ".join(f"{n} p50 {t['p50_ms']:.2f} ms mean {t['mean_ms']:.2f} ms"
                                      for n, t in timed.items() if isinstance(t, dict))
              + f"; {timed['ratio_p50']:.2f}x (p50), {timed['ratio_mean']:.2f}x (mean)", flush=True)
    print(f"same centre lines: {same_lines}; same feature vectors: {same_features}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if same_lines and same_features else 1


if __name__ == "__main__":
    raise SystemExit(main())
