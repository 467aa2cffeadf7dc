#!/usr/bin/env python
"""Kill test of the gallery: SIGKILL enrolling and removing processes at random moments.

Each round starts a child process that opens the gallery, enrols new writers (3
reference vectors each) one after another until it is killed, and in half of the rounds
also removes acknowledged writers (one after every other enrolment), printing ``ACK op name`` only after ``remove`` or
``enroll`` returned. The parent kills it with SIGKILL at a random
moment (a quarter of the kills during start-up and opening, where recovery runs; the rest
while it works: inside transactions, audit appends, index saves, vacuums), then checks:

* ``PRAGMA integrity_check`` of the database is ``ok`` and the gallery opens;
* every acknowledged enrolment is there, whole (3 vectors, equal to what was enrolled); every
  acknowledged removal is gone; the one change in flight is either whole or absent;
* the index agrees with the database and ``identify`` finds writers;
* the audit log's hash chain checks out against the database's chain head.

Children enrol precomputed embeddings through ``Gallery._enroll_embeddings``, the code
path of ``Gallery.enroll`` after the images are embedded, to keep rounds short.

    nice -n 19 python benchmarks/gallery_kill.py --kills 200 --out kill.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
SAMPLES = 3
MODEL = "kill-test-vectors"


class VectorEmbedder:
    """Stands in for the model: these processes store precomputed vectors only."""

    model_sha256 = MODEL
    dim = DIM
    threshold = 0.5
    fusion = "mean"
    bundle = None

    def embed(self, image):  # pragma: no cover - never called here
        raise RuntimeError("the kill test enrols precomputed embeddings")

    def verify_embeddings(self, query, references):  # pragma: no cover
        raise RuntimeError("not used")


def writer_vectors(name: str) -> np.ndarray:
    """The 3 reference vectors of a writer, a function of its name (intra cosine ~0.7)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(DIM)
    centre /= np.linalg.norm(centre)
    v = centre + 0.65 * rng.standard_normal((SAMPLES, DIM)) / np.sqrt(DIM)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _options():
    from sigedge.gallery import GalleryOptions

    # Save the index on every change, so that kills land in index saves too.
    return GalleryOptions(index_save_every=1, identify_threshold=0.3, lock_timeout=120)


def say(line: str) -> None:
    """One line in one write: print() writes its parts one by one, which an unbuffered stdout
    (PYTHONUNBUFFERED) passes on one by one, so a kill between them left half a line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def child(args: argparse.Namespace) -> int:
    """Enrol new writers until killed (or ``--limit`` of them), removing the writers named
    after every other enrolment."""
    from sigedge.gallery import Gallery

    g = Gallery(args.gallery, VectorEmbedder(), options=_options())
    say("READY")
    to_remove = list(args.names)
    for j in range(args.limit):
        if to_remove and j % 2 == 1:  # interleave removals with enrolments
            name = to_remove.pop()
            say(f"BEGIN remove {name}")
            g.remove(name)
            say(f"ACK remove {name}")
        name = f"{args.prefix}-w{j}"
        say(f"BEGIN enroll {name}")
        g._enroll_embeddings(name, writer_vectors(name))
        say(f"ACK enroll {name}")
    g.close()
    say("DONE")
    return 0


def check(gallery: Path, expected: set[str], removed: set[str], in_flight: str | None, mode: str,
          rng: random.Random) -> tuple[dict[str, int], list[str], bool | None]:
    """(counters, problems, whether the in-flight change is in the gallery)."""
    from sigedge.gallery import Gallery

    problems: list[str] = []
    counts = {"corrupt": 0, "lost": 0, "half": 0, "resurrected": 0, "unexpected": 0, "identify_failures": 0}
    db = gallery / "gallery.db"
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        finally:
            conn.close()
        if result != "ok":
            counts["corrupt"] += 1
            problems.append(f"integrity_check: {result}")
            return counts, problems, None
    elif expected:
        counts["corrupt"] += 1
        return counts, ["database missing"], None
    else:
        return counts, problems, False  # killed before the gallery was even created
    try:
        g = Gallery(gallery, VectorEmbedder(), options=_options(), create=False)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what we look for
        if "no gallery here" in str(exc) and not expected:
            return counts, problems, False  # killed while creating it: nothing was acknowledged
        counts["corrupt"] += 1
        return counts, [f"open failed: {type(exc).__name__}: {exc}"], None
    in_flight_present: bool | None = None
    try:
        observed = {w.writer_id: w.samples for w in g.writers()}
        for name in expected:
            if name == in_flight and mode == "remove":
                continue
            if name not in observed:
                counts["lost"] += 1
                problems.append(f"acknowledged enrolment lost: {name}")
            elif observed[name] != SAMPLES or not np.allclose(g.references(name), writer_vectors(name), atol=1e-6):
                counts["half"] += 1
                problems.append(f"{name}: {observed[name]} samples or wrong vectors")
        for name in observed:
            if name in removed and name != in_flight:
                counts["resurrected"] += 1
                problems.append(f"acknowledged removal undone: {name}")
            elif name not in expected and name != in_flight:
                counts["unexpected"] += 1
                problems.append(f"writer nobody enrolled: {name}")
        if in_flight is not None:
            in_flight_present = in_flight in observed
            if in_flight_present and (observed[in_flight] != SAMPLES
                                      or not np.allclose(g.references(in_flight), writer_vectors(in_flight), atol=1e-6)):
                counts["half"] += 1
                problems.append(f"in-flight {mode} of {in_flight} is half there: {observed[in_flight]} samples")
        if g._live != len(observed) or g._index.element_count - g._index_deleted != len(observed):
            counts["corrupt"] += 1
            problems.append(f"index holds {g._live} live writers, database {len(observed)}")
        for name in rng.sample(sorted(observed), min(5, len(observed))):
            top = g._identify_embedding(writer_vectors(name).mean(axis=0), k=1)
            if not top or top[0].writer_id != name:
                counts["identify_failures"] += 1
                problems.append(f"identify did not find {name}: {top[:1]}")
        report = g.check_audit()
        if not report.ok:
            counts["corrupt"] += 1
            problems.append(f"audit: {report.reason}")
    finally:
        g.close()
    return counts, problems, in_flight_present


def whole_lines(read: list[str], rest: bytes) -> list[str]:
    """The child's lines, from those already read and the rest of its output. Only whole lines
    count: a line the kill cut short was not said (an ACK cut short leaves its operation in
    flight, which is what it is)."""
    return ("".join(read) + rest.decode(errors="replace")).split("\n")[:-1]


def parent(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sigedge-kill-"))
    gallery = root / "gallery"
    expected: set[str] = set()
    removed: set[str] = set()
    totals = {"corrupt": 0, "lost": 0, "half": 0, "resurrected": 0, "unexpected": 0, "identify_failures": 0}
    stats = {"rounds": 0, "kills": 0, "kills_before_ready": 0, "kills_while_working": 0, "enroll_kills": 0,
             "remove_kills": 0, "acknowledged_enrolments": 0, "acknowledged_removals": 0,
             "in_flight_committed": 0, "in_flight_absent": 0, "child_errors": 0}
    problems: list[str] = []
    t0 = time.time()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                    env.get("PYTHONPATH", "")) if p)
    while stats["kills"] < args.kills and stats["rounds"] < args.kills * 4:
        stats["rounds"] += 1
        r = stats["rounds"]
        names = rng.sample(sorted(expected), min(len(expected), 40)) if expected and rng.random() < 0.5 else []
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--gallery", str(gallery),
               "--prefix", f"r{r}", "--limit", str(args.limit), "--names", *names]
        # bufsize=0: readline must not read ahead, communicate() reads the raw pipe afterwards
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
        early = rng.random() < 0.25
        killed = False
        lines: list[str] = []
        if early:
            time.sleep(rng.uniform(0.0, args.startup))
        else:
            line = proc.stdout.readline().decode()
            lines.append(line)
            if line.strip() == "READY":
                time.sleep(rng.uniform(0.0, args.work))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
        out, err = proc.communicate()
        lines = whole_lines(lines, out)
        if proc.returncode not in (0, -signal.SIGKILL):
            stats["child_errors"] += 1
            problems.append(f"round {r}: child exited {proc.returncode}: {err.decode()[-500:]}")
        ops = [x.split(" ", 2) for x in lines if x.startswith(("BEGIN ", "ACK "))]
        acked = [(op, name) for kind, op, name in ops if kind == "ACK"]
        begun = [(op, name) for kind, op, name in ops if kind == "BEGIN"]
        in_flight_op = begun[-1] if begun and (not acked or begun[-1] != acked[-1]) else None
        mode, in_flight = in_flight_op if in_flight_op else ("enroll", None)
        if killed:
            stats["kills"] += 1
            stats["kills_before_ready" if not any(x.strip() == "READY" for x in lines) else "kills_while_working"] += 1
            if in_flight_op:
                stats[f"{mode}_kills"] += 1
        for op, name in acked:
            if op == "enroll":
                expected.add(name)
                stats["acknowledged_enrolments"] += 1
            else:
                expected.discard(name)
                removed.add(name)
                stats["acknowledged_removals"] += 1
        counts, found, present = check(gallery, expected, removed, in_flight, mode, rng)
        for k, v in counts.items():
            totals[k] += v
        problems += [f"round {r} (in flight: {in_flight_op}, killed={killed}): {p}" for p in found]
        if in_flight is not None and present is not None:
            stats["in_flight_committed" if (present == (mode == "enroll")) else "in_flight_absent"] += 1
            if mode == "enroll" and present:
                expected.add(in_flight)
            if mode == "remove" and not present:
                expected.discard(in_flight)
                removed.add(in_flight)
        if args.verbose:
            print(f"round {r}: killed={killed} acked={len(acked)} in_flight={in_flight_op} "
                  f"present={present} problems={len(found)}", file=sys.stderr)
    result = {"gallery": str(gallery), **stats, **totals, "writers_at_end": len(expected),
              "seconds": round(time.time() - t0, 1), "problems": problems[:50],
              "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (default 200).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=10_000, help="A child stops after enrolling this many writers.")
    ap.add_argument("--startup", type=float, default=1.0, help="Early kills land within this many seconds of spawn.")
    ap.add_argument("--work", type=float, default=1.0, help="Other kills land within this many seconds of READY.")
    ap.add_argument("--dir", help="Work folder (default: a new temporary one).")
    ap.add_argument("--out", help="Write the results as JSON here.")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="w", help=argparse.SUPPRESS)
    ap.add_argument("--gallery", help=argparse.SUPPRESS)
    ap.add_argument("--names", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    result = parent(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    bad = result["corrupt"] + result["lost"] + result["half"] + result["resurrected"] + result["unexpected"] \
        + result["identify_failures"] + result["child_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
