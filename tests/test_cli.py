"""The sigedge command line: outputs, exit codes, bad input, no TensorFlow, no network."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sigedge.cli import app
from sigedge.synth import synthetic_signature
from tests.helpers import make_eval_csv, write_png

runner = CliRunner()


@pytest.fixture(scope="module")
def sigs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sigs")
    return {f"{w}_{s}": write_png(d / f"{w}_{s}.png", synthetic_signature(w, s)) for w in range(3) for s in range(4)}


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigedge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_verify_accepts_and_rejects_with_exit_codes(sigs):
    ok = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_0"]), str(sigs["0_1"])])
    assert ok.exit_code == 0, ok.output
    assert "GENUINE" in ok.output
    assert "normalised" not in ok.output  # the packaged bundle has no writer normalisation
    assert "learned scorer's genuine probability" in ok.output  # it has a learned scorer
    rej = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["1_0"]), "--threshold", "0.99999"])
    assert rej.exit_code == 1 and "REJECTED" in rej.output


def test_verify_json(sigs):
    r = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_1"]), str(sigs["0_2"]), "--json"])
    data = json.loads(r.output)
    assert set(data) >= {"score", "threshold", "genuine", "decision", "similarities", "model_sha256",
                         "reference_agreement", "writer_normalised"}
    assert data["writer_normalised"] is False and 0 < data["reference_agreement"] <= 1
    assert data["scorer"] == "learned" and 0 <= data["score"] <= 1 and data["cosine"] > 0
    assert r.exit_code == (0 if data["genuine"] else 1)


def test_verify_and_evaluate_with_the_plain_cosine(sigs, tmp_path):
    args = ["verify", str(sigs["0_0"]), str(sigs["0_1"]), str(sigs["0_2"]), "--json"]
    learned, cosine = (json.loads(runner.invoke(app, args + extra).output) for extra in ([], ["--scorer", "cosine"]))
    assert cosine["scorer"] == "cosine" and cosine["score"] == pytest.approx(learned["cosine"])
    assert cosine["threshold"] != learned["threshold"]  # each on its own calibrated scale
    bad = runner.invoke(app, args + ["--scorer", "hog"])
    assert bad.exit_code == 2 and "--scorer must be bundle or cosine" in bad.output
    labels = make_eval_csv(tmp_path)
    reports = {s: json.loads(runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--json", "--scorer", s]).output)
               for s in ("bundle", "cosine")}
    assert reports["bundle"]["extra"]["scorer"] == "learned" and reports["cosine"]["extra"]["scorer"] == "cosine"
    assert reports["bundle"]["extra"]["query_rotations"] == [-10.0, 0.0, 10.0]  # the packaged bundle turns queries
    assert reports["bundle"]["n_genuine"] == reports["cosine"]["n_genuine"]  # the same draws
    # another fusion than the bundle's scores cosines: "at the shipped threshold" is the cosine's
    other = json.loads(runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--json", "--fusion", "max"]).output)
    assert other["extra"]["scorer"] == "cosine"
    assert other["extra"]["shipped_threshold"]["value"] == reports["cosine"]["extra"]["shipped_threshold"]["value"]


def test_verify_with_a_writer_normalised_bundle_says_so(sigs, tmp_path):
    from tests.helpers import normalised_bundle

    bundle = str(normalised_bundle(tmp_path))
    two = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_1"]), str(sigs["0_2"]), "--bundle", bundle])
    assert two.exit_code in (0, 1) and "normalised for how closely the references agree" in two.output
    one = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_1"]), "--bundle", bundle])
    assert one.exit_code in (0, 1) and "normalised" not in one.output  # one reference: the plain similarity


def test_verify_usage_errors(sigs):
    r = runner.invoke(app, ["verify", str(sigs["0_0"])])
    assert r.exit_code == 2
    r = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_1"]), "--precision", "fp16"])
    assert r.exit_code == 2


def test_verify_against_a_gallery(sigs, tmp_path):
    """verify --gallery G --writer W: the writer's stored references, the same score as the
    images themselves; the model guard holds for --precision; the options go together."""
    g = tmp_path / "g"
    refs = [str(sigs[f"0_{i}"]) for i in range(3)]
    assert runner.invoke(app, ["enroll", str(g), "alice", *refs]).exit_code == 0
    r = runner.invoke(app, ["verify", str(sigs["0_3"]), "--gallery", str(g), "--writer", "alice", "--json"])
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    assert data["references"] == ["alice#0", "alice#1", "alice#2"]
    direct = json.loads(runner.invoke(app, ["verify", str(sigs["0_3"]), *refs, "--json"]).stdout)
    assert data["score"] == pytest.approx(direct["score"], abs=1e-5)
    r = runner.invoke(app, ["verify", str(sigs["0_3"]), "--gallery", str(g), "--writer", "alice", "--precision", "float"])
    assert r.exit_code == 6 and "sigedge reindex" in r.output  # another model than the gallery's
    assert runner.invoke(app, ["verify", str(sigs["0_3"]), "--gallery", str(g)]).exit_code == 2
    assert runner.invoke(app, ["verify", str(sigs["0_3"]), refs[0], "--gallery", str(g), "--writer", "alice"]).exit_code == 2


def _bad_inputs(tmp_path):
    sig_png = cv2.imencode(".png", synthetic_signature(1, 0))[1].tobytes()
    files = {
        "empty.png": (b"", 3),
        "text.png": (b"this is not an image\n", 3),
        "truncated.png": (sig_png[: len(sig_png) // 3], 3),
        "one_pixel.png": (cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(), 4),
        "blank_page.png": (cv2.imencode(".png", np.full((800, 600), 255, np.uint8))[1].tobytes(), 4),
    }
    out = {}
    for name, (data, code) in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        out[name] = (p, code)
    out["missing.png"] = (tmp_path / "missing.png", 3)
    return out


def test_bad_input_gives_one_line_and_exit_code(sigs, tmp_path):
    for name, (path, code) in _bad_inputs(tmp_path).items():
        r = run_cli("verify", path, sigs["0_0"])
        assert r.returncode == code, (name, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sigedge: error:"), (name, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""


def test_no_tensorflow_and_no_network(sigs):
    """`sigedge verify` imports no TensorFlow and opens no socket."""
    code = textwrap.dedent(f"""
        import socket, sys
        class NoNetwork(socket.socket):
            def connect(self, *a, **k):
                raise RuntimeError("network use attempted")
            connect_ex = connect
        socket.socket = NoNetwork
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("network use attempted"))
        import sigedge
        assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
        from sigedge.cli import app
        try:
            app(["verify", {str(sigs['0_0'])!r}, {str(sigs['0_1'])!r}, "--json"])
        except SystemExit as e:
            code = e.code
        tf = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        print("EXIT", code, "TF", tf)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "network use attempted" not in r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("EXIT ") and last.endswith("TF []"), r.stdout + r.stderr
    assert last.split()[1] in ("0", "1")


def test_embed_clean_info(sigs, tmp_path):
    out = tmp_path / "e.npy"
    r = runner.invoke(app, ["embed", str(sigs["0_0"]), str(sigs["1_0"]), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert np.load(out).shape[0] == 2
    r = runner.invoke(app, ["clean", str(sigs["0_0"]), "-o", str(tmp_path / "c.png")])
    assert r.exit_code == 0 and cv2.imread(str(tmp_path / "c.png")) is not None
    r = runner.invoke(app, ["clean", str(sigs["0_0"]), "-o", str(tmp_path / "canvas.png"), "--canvas"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["info", "--json"])
    info = json.loads(r.output)
    assert info["interpreter_backend"] != "tensorflow.lite"
    assert len(info["bundle"]["models"]["embedder"]["sha256"]) == 64


def test_evaluate_reports_and_plots(tmp_path):
    labels = make_eval_csv(tmp_path)
    r = runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--json", "--plot", str(tmp_path / "roc.png")])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["writers"] == 4 and rep["n_skilled"] == 8 and 0 <= rep["eer_random"] <= 1
    assert (tmp_path / "roc.png").stat().st_size > 1000
    bad = tmp_path / "bad.csv"
    bad.write_text("path,who\nx.png,a\n")
    assert runner.invoke(app, ["evaluate", str(bad)]).exit_code == 2


def test_evaluate_over_several_reference_draws(tmp_path):
    labels = make_eval_csv(tmp_path, writers=5, genuine=8)
    r = runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--seed", "4", "--draws", "3", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    d = rep["extra"]["draws"]
    assert d["n"] == 3 and d["seeds"] == [4, 5, 6] and len(d["eer_random_per_draw"]) == 3
    assert d["eer_random_per_draw"][0] == rep["eer_random"]  # the first draw is the reported one
    assert d["eer_skilled_per_draw"][0] == rep["eer_skilled"]
    assert d["eer_random_mean"] == np.mean(d["eer_random_per_draw"])
    alone = json.loads(runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--seed", "5", "--json"]).output)
    assert alone["eer_random"] == d["eer_random_per_draw"][1]  # draw k is exactly --seed SEED+k
    human = runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--draws", "2"])
    assert "random EER over 2 reference draws (seeds 0-1)" in human.output
    assert runner.invoke(app, ["evaluate", str(labels), "--draws", "0"]).exit_code == 2


def test_evaluate_bootstrap_over_writers(tmp_path):
    labels = make_eval_csv(tmp_path, writers=5, genuine=8)
    rep = json.loads(runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--json", "--bootstrap", "40"]).output)
    b = rep["extra"]["bootstrap"]
    assert b["unit"] == "writer" and b["resamples"] == 40 and b["level"] == 0.95
    for name in ("skilled", "random"):
        lo, hi = b[f"eer_{name}_interval"]
        assert lo <= rep[f"eer_{name}"] <= hi
    human = runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--bootstrap", "40"])
    assert "random EER, 95 % interval over 40 resamples of the writers" in human.output
    assert runner.invoke(app, ["evaluate", str(labels), "--bootstrap", "-1"]).exit_code == 2


def test_bench_json():
    r = runner.invoke(app, ["bench", "--repeat", "3", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert {"decode", "normalise", "embed_int8", "embed_float32", "score", "ink_statistics",
            "score_learned", "describe_upright", "describe_query"} <= set(rep["stages"])
    assert rep["models"]["embedder"]["bytes"] < rep["models"]["embedder_float"]["bytes"]
    # the packaged bundle turns every query: its end-to-end time counts each angle
    st = rep["stages"]
    assert rep["query_rotations"] == [-10.0, 0.0, 10.0]
    assert rep["query_rotations_cost_vs_upright"] == pytest.approx(
        st["describe_query"]["p50_ms"] / st["describe_upright"]["p50_ms"])
    assert rep["end_to_end_p50_ms"] == pytest.approx(
        st["decode"]["p50_ms"] + st["describe_query"]["p50_ms"] + 3 * st["score_learned"]["p50_ms"])
    # the packaged scorer weighs a background of other writers: timed against itself without it
    assert rep["score_background_cost_vs_without"] == pytest.approx(
        st["score_learned"]["p50_ms"] / st["score_learned_without_background"]["p50_ms"])


def test_bench_times_detection_on_given_pages(tmp_path):
    pages = tmp_path / "pages"
    for k in range(3):
        page = np.full((700, 500, 3), 240, np.uint8)
        page[500:590, 100:360] = synthetic_signature(k, 0, size=(90, 260))
        write_png(pages / f"p{k}.png", page)
    (tmp_path / "split.txt").write_text("p0.png\np2.png\n")
    r = runner.invoke(app, ["bench", "--repeat", "2", "--pages", str(pages), "--split", str(tmp_path / "split.txt"),
                            "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["pages"] == 2 and rep["pages_source"] == "given pages"
    assert {"detect_page_int8", "detect_page_int8_rescored", "detect_page_float32"} <= set(rep["stages"])
    assert rep["stages"]["detect_page_int8"]["runs"] >= 2  # every page at least once


@pytest.mark.parametrize("args", [["--split", "x.txt"], ["--pages", "no/such/folder"]])
def test_bench_page_options_refuse_nonsense_with_a_usage_error(args, tmp_path):
    r = runner.invoke(app, ["bench", "--repeat", "1", *args])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


def test_export_without_train_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    r = runner.invoke(app, ["export", "--int8"])
    assert r.exit_code == 2
    assert "pip install 'sigedge[train]'" in r.output


def test_verify_explain_writes_a_picture(sigs, tmp_path):
    out = tmp_path / "why.png"
    r = runner.invoke(app, ["verify", str(sigs["2_0"]), str(sigs["2_1"]), str(sigs["1_1"]), "--explain", str(out)])
    assert r.exit_code in (0, 1), r.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > 3 * 256  # three panels side by side


@pytest.mark.parametrize("angle, said", [(-10.0, "scored with the query turned by -10 degrees"), (0.0, None)])
def test_verify_says_when_a_turned_query_scored(sigs, monkeypatch, angle, said):
    from dataclasses import replace

    from sigedge import Pipeline

    real = Pipeline.verify
    monkeypatch.setattr(Pipeline, "verify", lambda self, q, refs: replace(real(self, q, refs), query_rotation=angle))
    r = runner.invoke(app, ["verify", str(sigs["0_0"]), str(sigs["0_1"])])
    assert r.exit_code in (0, 1), r.output
    assert (said in r.output) if said else ("turned" not in r.output)


def test_query_rotations_option_turns_the_search_off_or_refuses_nonsense(sigs, tmp_path, caplog):
    args = ["verify", str(sigs["0_0"]), str(sigs["0_1"]), str(sigs["0_2"]), "--json"]
    with caplog.at_level("WARNING"):
        upright = runner.invoke(app, args + ["--query-rotations", "0"])
    assert upright.exit_code in (0, 1) and "calibrated with" in caplog.text  # the thresholds are the search's
    searched = json.loads(runner.invoke(app, args).stdout)
    upright = json.loads(upright.stdout)
    assert upright["query_rotation"] == 0.0 and upright["score"] <= searched["score"]  # the best angle counts
    for bad, said in (("5,abc", "comma-separated angles"), ("5", "must include 0"), ("0,120", "between -90 and 90"),
                      ("0,0,10", "repeated")):
        r = runner.invoke(app, args + ["--query-rotations", bad])
        assert r.exit_code == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    labels = make_eval_csv(tmp_path)
    report = json.loads(runner.invoke(app, ["evaluate", str(labels), "--refs", "3", "--json",
                                            "--query-rotations", "0"]).stdout)
    assert report["extra"]["query_rotations"] == [0.0]


def test_clean_and_verify_take_the_learned_cleaner(tmp_path):
    sig = synthetic_signature(4, 0, size=(200, 500))
    cluttered = sig.copy()
    cv2.putText(cluttered, "PAY TO THE ORDER OF", (5, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (40, 40, 40), 2)
    src = write_png(tmp_path / "in.png", cluttered)
    ink = {}
    for method in ("classic", "learned"):
        out = tmp_path / f"{method}.png"
        r = runner.invoke(app, ["clean", str(src), "-o", str(out), "--cleaner", method])
        assert r.exit_code == 0, r.output
        ink[method] = int((cv2.imread(str(out), cv2.IMREAD_GRAYSCALE) < 128).sum())
    assert ink["learned"] < ink["classic"]  # the printed text went too
    bad = runner.invoke(app, ["clean", str(src), "-o", str(tmp_path / "x.png"), "--cleaner", "magic"])
    assert bad.exit_code == 2 and "--cleaner" in bad.output
    ref = write_png(tmp_path / "ref.png", synthetic_signature(4, 1, size=(200, 500)))
    r = runner.invoke(app, ["verify", str(src), str(ref), "--cleaner", "learned", "--json"])
    assert r.exit_code in (0, 1) and "score" in json.loads(r.output)
