"""``sigedge detect``, ``evaluate-detector``, ``verify --page`` and ``identify --page`` with the bundled models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sigedge.cli import app
from sigedge.synth import synthetic_signature
from tests.helpers import write_png

runner = CliRunner()


def text_page(signatures: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A 1240x1754 page of printed text lines with generated signatures near the bottom."""
    rng = np.random.default_rng(seed)
    page = np.full((1754, 1240), 250, np.uint8)
    for y in range(150, 1100, 36):
        x = 120
        while x < 1050:
            w = int(rng.integers(30, 110))
            cv2.putText(page, "x" * max(1, w // 14), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 30, 1, cv2.LINE_AA)
            x += w + 14
    boxes = []
    for k in range(signatures):
        sig = synthetic_signature(k, 0, size=(160, 420), jitter=0.5).min(axis=2)
        x0, y0 = 120 + 560 * k, 1250
        page[y0:y0 + 160, x0:x0 + 420] = np.minimum(page[y0:y0 + 160, x0:x0 + 420], sig)
        boxes.append((x0, y0, x0 + 420, y0 + 160))
    return page, boxes


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("pages")
    blank = write_png(d / "blank.png", np.full((800, 600), 255, np.uint8))
    signed = write_png(d / "signed.png", text_page(2)[0])
    return {"blank": blank, "signed": signed, "dir": d}


def test_detect_reports_boxes_writes_crops_and_annotation(pages, tmp_path):
    crops, annotated = tmp_path / "crops", tmp_path / "annotated.png"
    res = runner.invoke(app, ["detect", str(pages["signed"]), "--json", "--threshold", "0.05",
                              "--crops", str(crops), "--annotate", str(annotated)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["width"], data["height"]) == (1240, 1754) and data["threshold"] == 0.05
    sigs = data["signatures"]
    assert sigs, "a page with two signatures gives at least one box at a low threshold"
    assert [s["score"] for s in sigs] == sorted((s["score"] for s in sigs), reverse=True)
    for s in sigs:
        x0, y0, x1, y1 = s["box"]
        assert 0 <= x0 < x1 <= 1240 and 0 <= y0 < y1 <= 1754
        assert cv2.imread(s["crop"]) is not None
    assert len(list(crops.glob("*.png"))) == len(sigs)
    assert cv2.imread(str(annotated)).shape == (1754, 1240, 3)


def test_detect_human_output_and_empty_page(pages):
    res = runner.invoke(app, ["detect", str(pages["blank"])])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("0 signature(s)")


def test_detect_unreadable_page_is_one_line_exit_3(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    res = runner.invoke(app, ["detect", str(bad)])
    assert res.exit_code == 3
    assert len(res.output.strip().splitlines()) == 1


def test_verify_page_without_signature_exits_4(pages, tmp_path):
    ref = write_png(tmp_path / "ref.png", synthetic_signature(0, 1))
    res = runner.invoke(app, ["verify", "--page", str(pages["blank"]), str(ref)])
    assert res.exit_code == 4, res.output
    assert "no signature" in res.output


def test_verify_page_reports_each_signature(pages, tmp_path):
    refs = [str(write_png(tmp_path / f"r{i}.png", synthetic_signature(0, i))) for i in range(1, 4)]
    res = runner.invoke(app, ["verify", "--page", str(pages["signed"]), *refs, "--json"])
    assert res.exit_code in (0, 1, 4), res.output
    if res.exit_code != 4:
        data = json.loads(res.output)
        assert data["signatures"] and all(s["decision"] in ("genuine", "rejected", "no ink")
                                          for s in data["signatures"])
        assert (res.exit_code == 0) == (data["decision"] == "genuine")


def test_page_flag_conflicts_are_usage_errors(pages):
    res = runner.invoke(app, ["verify", "--page", str(pages["signed"])])
    assert res.exit_code == 2


def test_evaluate_detector_on_a_yolo_folder(tmp_path):
    folder = tmp_path / "yolo"
    for i in range(3):
        page, boxes = text_page(1 + i % 2, seed=i)
        write_png(folder / "images" / f"p{i}.png", page)
        h, w = page.shape
        lines = [f"0 {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"
                 for x0, y0, x1, y1 in boxes]
        (folder / "labels").mkdir(exist_ok=True)
        (folder / "labels" / f"p{i}.txt").write_text("\n".join(lines))
    (tmp_path / "split.txt").write_text("p0.png\np2.png\n")
    res = runner.invoke(app, ["evaluate-detector", str(folder), "--json", "--split", str(tmp_path / "split.txt"),
                              "--failures", str(tmp_path / "fail"), "--bootstrap", "30"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["images"] == 2 and data["ground_truth"] == 2
    for key in ("precision", "recall", "map50", "map50_95"):
        assert 0.0 <= data[key] <= 1.0
    assert data["map50_95"] <= data["map50"]
    assert len(data["failures"]) == len(list((tmp_path / "fail").glob("*.png")))
    lo, hi = data["bootstrap"]["map50_interval"]
    assert data["bootstrap"]["resamples"] == 30 and lo <= data["map50"] <= hi
    human = runner.invoke(app, ["evaluate-detector", str(folder), "--bootstrap", "20", "--seed", "3"])
    assert human.exit_code == 0, human.output
    assert "95 % intervals over 20 resamples of the pages: mAP@0.5 " in human.output


def test_evaluate_detector_without_images_folder_is_usage_error(tmp_path):
    res = runner.invoke(app, ["evaluate-detector", str(tmp_path)])
    assert res.exit_code == 2


def test_identify_page_reports_each_signature(pages, tmp_path):
    refs = [str(write_png(tmp_path / f"w0_{i}.png", synthetic_signature(0, i))) for i in range(1, 4)]
    gallery = tmp_path / "g"
    enrolled = runner.invoke(app, ["enroll", str(gallery), "w0", *refs])
    assert enrolled.exit_code == 0, enrolled.output
    res = runner.invoke(app, ["identify", str(gallery), "--page", str(pages["signed"]), "--json", "--all"])
    assert res.exit_code in (0, 4), res.output
    if res.exit_code == 0:
        data = json.loads(res.output)
        assert data["signatures"]
        for s in data["signatures"]:
            assert s["decision"] in ("match", "unknown")
            assert (s["writer"] is None) == (s["decision"] == "unknown")
    blank = runner.invoke(app, ["identify", str(gallery), "--page", str(pages["blank"])])
    assert blank.exit_code == 4
