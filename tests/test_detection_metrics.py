from __future__ import annotations

import warnings

import numpy as np
import pytest

from sigedge.detection_metrics import (
    DetectionReport,
    average_precision,
    bootstrap_over_pages,
    evaluate_detections,
    failure_cases,
    iou_matrix,
    match_detections,
    read_yolo_labels,
    yolo_pairs,
)
from sigedge.detection_metrics import _copies
from sigedge.errors import UsageError


def _preds(boxes: list[list[float]], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores, dtype=float)


# --- IoU ---------------------------------------------------------------------------------


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10], [10, 0, 20, 10]], dtype=float)
    got = iou_matrix(a, b)
    assert got.shape == (1, 4) and got.dtype == np.float64
    # identical, disjoint, half of each box overlapping (50 / 150), touching edges
    assert got.tolist() == [[1.0, 0.0, 1 / 3, 0.0]]
    assert iou_matrix(b, a).tolist() == got.T.tolist()


def test_iou_empty_and_zero_area():
    a = np.array([[0, 0, 10, 10], [1, 1, 2, 2]], dtype=float)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)
    assert iou_matrix(np.zeros((0, 4)), a).shape == (0, 2)
    assert iou_matrix(np.array([]), np.array([])).shape == (0, 0)
    point = np.array([[3, 3, 3, 3]], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iou_matrix(point, point).tolist() == [[0.0]]
        assert iou_matrix(point, a).tolist() == [[0.0, 0.0]]


def test_iou_rejects_bad_shape():
    with pytest.raises(ValueError):
        iou_matrix(np.zeros((2, 3)), np.zeros((1, 4)))


# --- YOLO input --------------------------------------------------------------------------


def test_read_yolo_labels_without_trailing_newline_and_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\n0 0.5 0.5 0.5 0.25\n\n   \n3 0.25 0.75 0.1 0.2", encoding="utf-8")
    boxes = read_yolo_labels(path, width=200, height=100)
    assert boxes.dtype == np.float64
    # class ids are ignored; xc*W +- w*W/2, yc*H +- h*H/2
    assert boxes.tolist() == [[50.0, 37.5, 150.0, 62.5], [40.0, 65.0, 60.0, 85.0]]


def test_read_yolo_labels_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    boxes = read_yolo_labels(path, 100, 100)
    assert boxes.shape == (0, 4)


@pytest.mark.parametrize("bad", ["0 0.5 0.5 0.5", "0 0.5 0.5 0.5 0.5 0.1", "0 a 0.5 0.5 0.5", "0 0.5 0.5 -0.1 0.2",
                                 "0.5 0.5 0.5 0.5 0.5", "0 nan 0.5 0.5 0.5"])
def test_read_yolo_labels_malformed_line(tmp_path, bad):
    path = tmp_path / "bad.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n\n{bad}\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_yolo_labels(path, 100, 100)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path}:3:" in message


def test_read_yolo_labels_missing_file(tmp_path):
    with pytest.raises(UsageError, match="nope.txt"):
        read_yolo_labels(tmp_path / "nope.txt", 100, 100)


def test_yolo_pairs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ["b.PNG", "a.jpg", "c.tiff", "notes.txt", "d.jpeg"]:
        (tmp_path / "images" / name).write_bytes(b"x")
    (tmp_path / "images" / "sub.png").mkdir()  # a directory, not an image
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n", encoding="utf-8")
    (tmp_path / "labels" / "c.txt").write_text("", encoding="utf-8")
    pairs = yolo_pairs(tmp_path)
    assert [(img.name, lab.name if lab else None) for img, lab in pairs] == [
        ("a.jpg", "a.txt"),
        ("b.PNG", None),
        ("c.tiff", "c.txt"),
        ("d.jpeg", None),
    ]


def test_yolo_pairs_without_images_dir(tmp_path):
    with pytest.raises(UsageError) as info:
        yolo_pairs(tmp_path)
    assert "images/" in str(info.value) and "\n" not in str(info.value)


# --- matching and AP ---------------------------------------------------------------------


def test_match_detections_is_greedy_by_score_and_one_to_one():
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    boxes = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    tp, order = match_detections(boxes, np.array([0.5, 0.9, 0.7]), gt, 0.5)
    assert order.tolist() == [1, 2, 0]
    assert tp.tolist() == [True, False, False]  # the duplicate at 0.5 finds its GT taken


def test_ap_perfect_predictions():
    gt = {"a": np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float), "b": np.array([[5, 5, 15, 15]], float)}
    preds = {k: (v, np.linspace(0.9, 0.5, len(v))) for k, v in gt.items()}
    assert average_precision(preds, gt, 0.5) == 1.0
    report = evaluate_detections(preds, gt)
    assert report.map50 == 1.0 and report.map50_95 == 1.0
    assert (report.precision, report.recall, report.f1) == (1.0, 1.0, 1.0)


def test_ap_hand_computed():
    # 2 GT; ranked predictions TP (0.9), FP (0.8), TP (0.7).
    # recall    = [1/2, 1/2, 1]   precision = [1, 1/2, 2/3]   envelope = [1, 2/3, 2/3]
    # recall points 0.00..0.50 (51 of them) read precision 1; 0.51..1.00 (50) read 2/3
    # AP = (51 * 1 + 50 * 2/3) / 101 = 253 / 303
    gt = {"a": np.array([[0, 0, 10, 10]], float), "b": np.array([[0, 0, 10, 10]], float)}
    preds = {"a": _preds([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8]), "b": _preds([[0, 0, 10, 10]], [0.7])}
    assert average_precision(preds, gt, 0.5) == pytest.approx(253 / 303, abs=1e-12)


def test_ap_uses_envelope_and_pools_images_by_score():
    # 3 GT; scores interleave images, so the pooled ranking is TP a, FP b, TP b, TP a.
    # recall = [1/3, 1/3, 2/3, 1]   precision = [1, 1/2, 2/3, 3/4]   envelope = [1, 3/4, 3/4, 3/4]
    # points 0..0.33 (34) -> 1; 0.34..1.00 (67) -> 3/4 (not 2/3: the envelope looks ahead)
    # AP = (34 + 67 * 3/4) / 101 = 337 / 404
    gt = {"a": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "b": np.array([[0, 0, 10, 10]], float)}
    preds = {
        "a": _preds([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.6]),
        "b": _preds([[50, 50, 60, 60], [0, 0, 10, 10]], [0.8, 0.7]),
    }
    assert average_precision(preds, gt, 0.5) == pytest.approx(337 / 404, abs=1e-12)


def test_map50_95_lower_for_offset_boxes():
    # IoU = 90*100 / (110*100) = 0.818: a hit at 0.50..0.80 (7 thresholds), a miss at 0.85..0.95
    gt = {"a": np.array([[0, 0, 100, 100]], float)}
    preds = {"a": _preds([[10, 0, 110, 100]], [0.9])}
    report = evaluate_detections(preds, gt)
    assert report.map50 == 1.0
    assert report.map50_95 == pytest.approx(0.7, abs=1e-12)


def _mixed_case():
    gt = {"a": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), "b": np.array([[0, 0, 10, 10]], float)}
    preds = {"a": _preds([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.2])}
    return preds, gt


def test_precision_recall_f1_at_threshold():
    preds, gt = _mixed_case()
    report = evaluate_detections(preds, gt, score_threshold=0.3)
    assert isinstance(report, DetectionReport)
    # kept at 0.3: one TP, one FP; 3 GT (one below threshold, one on an image with no predictions)
    assert (report.images, report.ground_truth, report.predictions) == (2, 3, 2)
    assert report.precision == 0.5
    assert report.recall == pytest.approx(1 / 3, abs=1e-12)
    assert report.f1 == pytest.approx(0.4, abs=1e-12)
    # all predictions ranked, 3 GT: recall [1/3, 1/3, 2/3], envelope [1, 2/3, 2/3]
    # points 0..0.33 (34) -> 1, 0.34..0.66 (33) -> 2/3, 0.67..1 (34) -> 0: AP = 56/101
    assert report.map50 == pytest.approx(56 / 101, abs=1e-12)
    d = report.to_dict()
    assert d["score_threshold"] == 0.3 and d["predictions"] == 2 and set(d) == {
        "images", "ground_truth", "predictions", "score_threshold", "precision", "recall", "f1", "map50", "map50_95"}
    # a lower threshold finds the third box
    low = evaluate_detections(preds, gt, score_threshold=0.1)
    assert (low.predictions, low.precision, low.recall) == (3, pytest.approx(2 / 3), pytest.approx(2 / 3))


def test_no_ground_truth():
    preds = {"a": _preds([[0, 0, 1, 1]], [0.9])}
    report = evaluate_detections(preds, {})
    assert (report.ground_truth, report.predictions) == (0, 1)
    assert (report.precision, report.recall, report.f1) == (0.0, 1.0, 0.0)
    assert (report.map50, report.map50_95) == (0.0, 0.0)
    empty = evaluate_detections({}, {"a": np.zeros((0, 4))})
    assert (empty.images, empty.precision, empty.recall, empty.f1, empty.map50) == (1, 1.0, 1.0, 1.0, 1.0)


def test_no_predictions():
    gt = {"a": np.array([[0, 0, 10, 10]], float)}
    for preds in ({}, {"a": _preds([], [])}):
        report = evaluate_detections(preds, gt)
        assert (report.predictions, report.ground_truth) == (0, 1)
        assert (report.precision, report.recall, report.f1) == (1.0, 0.0, 0.0)
        assert (report.map50, report.map50_95) == (0.0, 0.0)


def test_failure_cases():
    preds, gt = _mixed_case()
    preds["c"] = _preds([[1, 1, 2, 2]], [0.1])  # below threshold, no GT: not a failure
    cases = failure_cases(preds, gt, score_threshold=0.3)
    assert cases == {
        "a": {"false_positives": [[50.0, 50.0, 60.0, 60.0]], "missed": [[20.0, 20.0, 30.0, 30.0]]},
        "b": {"false_positives": [], "missed": [[0.0, 0.0, 10.0, 10.0]]},
    }
    low = failure_cases(preds, gt, score_threshold=0.05)
    assert low["c"] == {"false_positives": [[1.0, 1.0, 2.0, 2.0]], "missed": []}
    perfect = {"a": (gt["a"], np.array([0.9, 0.8]))}
    assert failure_cases(perfect, {"a": gt["a"]}, score_threshold=0.3) == {}


def test_bootstrap_over_pages_gives_intervals_around_the_report_and_is_seeded():
    # ten pages found perfectly, two where the detector misses: recall 10/12, mAP < 1
    gt = {f"p{k}": np.array([[0, 0, 10, 10]], float) for k in range(12)}
    preds = {f"p{k}": _preds([[0, 0, 10, 10]], [0.9]) for k in range(10)}
    preds["p10"] = _preds([[50, 50, 60, 60]], [0.95])  # a confident false positive
    full = evaluate_detections(preds, gt, 0.5)
    b = bootstrap_over_pages(preds, gt, 0.5, resamples=400, seed=0)
    assert b["unit"] == "page" and b["resamples"] == 400
    for name in ("map50", "map50_95", "precision", "recall"):
        lo, hi = b[f"{name}_interval"]
        assert 0.0 <= lo <= getattr(full, name) <= hi <= 1.0
    lo, hi = b["recall_interval"]
    assert hi == 1.0 and lo < 0.7  # a resample may miss both bad pages, or draw them several times
    assert b == bootstrap_over_pages(preds, gt, 0.5, resamples=400, seed=0)
    other = bootstrap_over_pages(preds, gt, 0.5, resamples=400, seed=1)
    assert b["recall_interval"] != other["recall_interval"] or b["map50_interval"] != other["map50_interval"]
    # identical pages: every resample is the same set, so the interval is the point
    same = bootstrap_over_pages({k: v for k, v in preds.items() if k != "p10"},
                                {k: v for k, v in gt.items() if k not in ("p10", "p11")}, 0.5, resamples=50)
    assert same["map50_interval"] == (1.0, 1.0) and same["recall_interval"] == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_over_pages({}, {}, 0.5)


def test_bootstrap_over_pages_against_a_baseline_is_paired():
    gt = {f"p{k}": np.array([[0, 0, 10, 10]], float) for k in range(12)}
    # misses p3-p5: its figures vary from resample to resample
    good = {f"p{k}": _preds([[0, 0, 10, 10]], [0.9]) for k in range(12) if k not in (3, 4, 5)}
    worse = {k: v for k, v in good.items() if k not in ("p0", "p1", "p2")}  # misses three more
    b = bootstrap_over_pages(good, gt, 0.5, resamples=300, seed=0, baseline=(worse, 0.5))
    lo, hi = b["difference_recall_interval"]
    assert 0.0 <= lo < 0.25 < hi  # the full set's difference is 3/12; a resample may draw none of the three
    assert b["share_better_recall"] > 0.9 and b["difference_precision_interval"] == (0.0, 0.0)
    # the figures of the predictions themselves do not depend on the baseline
    alone = bootstrap_over_pages(good, gt, 0.5, resamples=300, seed=0)
    assert {k: v for k, v in b.items() if not k.startswith(("difference", "share"))} == alone
    # paired: against itself every resample's difference is exactly 0, though each figure varies
    same = bootstrap_over_pages(good, gt, 0.5, resamples=50, baseline=(good, 0.5))
    assert same["recall_interval"][0] < same["recall_interval"][1]
    assert same["difference_recall_interval"] == (0.0, 0.0) and same["share_better_recall"] == 0.0


def test_a_page_drawn_twice_counts_twice():
    table = {"a": 1, "b": 2}
    assert _copies(["a", "a", "c"], table, 0) == {"0:a": 1, "1:a": 1, "2:c": 0}


def test_overlap_matrix_is_intersection_over_the_smaller_box():
    from sigedge.detection_metrics import overlap_matrix

    big = np.array([[0, 0, 100, 100]], float)
    inside = np.array([[10, 10, 30, 30]], float)  # wholly inside: overlap 1, IoU 0.04
    half = np.array([[90, 0, 110, 10]], float)  # half of it inside
    apart = np.array([[200, 200, 210, 210]], float)
    flat = np.array([[50, 50, 50, 60]], float)  # zero area
    m = overlap_matrix(big, np.vstack([inside, half, apart, flat]))
    assert m.shape == (1, 4)
    assert m[0] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert overlap_matrix(inside, big)[0, 0] == 1.0  # symmetric in which box is smaller


def test_page_images_reads_a_folder_or_a_yolo_folder_and_a_split(tmp_path, caplog):
    from sigedge.detection_metrics import page_images
    from tests.helpers import write_png

    for name in ("b.png", "a.jpg", "c.png"):  # listed by suffix, never decoded here
        write_png(tmp_path / "images" / name, np.full((20, 30), 255, np.uint8))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    assert [p.name for p in page_images(tmp_path)] == ["a.jpg", "b.png", "c.png"]  # YOLO folder
    assert [p.name for p in page_images(tmp_path / "images")] == ["a.jpg", "b.png", "c.png"]  # plain folder
    split = tmp_path / "split.txt"
    split.write_text("\ufeffc.png\n\na.jpg\nmissing.png\n", encoding="utf-8")  # a byte-order mark, as Notepad writes
    with caplog.at_level("WARNING", logger="sigedge.detection_metrics"):
        assert [p.name for p in page_images(tmp_path, split)] == ["a.jpg", "c.png"]
    assert "1 of the 3 names" in caplog.text
    split.write_text("other.png\n")
    with pytest.raises(UsageError, match="no page images named in"):
        page_images(tmp_path, split)
    with pytest.raises(UsageError, match="is not a folder"):
        page_images(split)
    with pytest.raises(UsageError, match="no such folder"):
        page_images(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="cannot read"):
        page_images(tmp_path, tmp_path / "no-split.txt")
