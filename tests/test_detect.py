"""Detection decoding on known tensors: peaks, boxes, NMS, letterbox and the page mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sigedge.detect import Detection, Letterbox, _to_page, crop, decode_heatmap, letterbox, nms
from sigedge.detection_metrics import iou_matrix

STRIDE = 8


def maps(peaks: list[tuple[int, int, float]], size: int = 40, box=(np.log(10.0), np.log(3.0), 0.5, 0.25)):
    """Heatmap logits with the given (y, x, probability) peaks, all with the same box."""
    heat = np.full((size, size, 1), -8.0, np.float32)
    boxes = np.zeros((size, size, 4), np.float32)
    for y, x, p in peaks:
        heat[y, x, 0] = np.log(p / (1 - p))
        boxes[y, x] = box
    return heat, boxes


def test_decode_places_the_box_from_log_size_and_offset():
    heat, box = maps([(5, 10, 0.9)])
    boxes, scores = decode_heatmap(heat, box, STRIDE, 0.5)
    # centre ((10 + 0.5) * 8, (5 + 0.25) * 8) = (84, 42); size (10 * 8, 3 * 8) = (80, 24)
    np.testing.assert_allclose(boxes, [[44.0, 30.0, 124.0, 54.0]], atol=1e-3)
    np.testing.assert_allclose(scores, [0.9], atol=1e-5)


def test_decode_keeps_only_local_maxima_above_the_threshold():
    heat, box = maps([(5, 10, 0.9), (5, 11, 0.8), (20, 20, 0.6), (30, 30, 0.2)])
    boxes, scores = decode_heatmap(heat, box, STRIDE, 0.5)
    # (5, 11) is next to a stronger cell; (30, 30) is under the threshold
    np.testing.assert_allclose(scores, [0.9, 0.6], atol=1e-5)
    assert boxes.shape == (2, 4)


def test_decode_with_nothing_above_threshold_is_empty():
    heat, box = maps([])
    boxes, scores = decode_heatmap(heat, box, STRIDE, 0.3)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_decode_caps_the_number_of_candidates_best_first():
    heat, box = maps([(4 * i, 4, 0.5 + 0.04 * i) for i in range(10)])
    _, scores = decode_heatmap(heat, box, STRIDE, 0.1, max_candidates=3)
    np.testing.assert_allclose(scores, [0.86, 0.82, 0.78], atol=1e-5)


def test_nms_suppresses_overlaps_and_keeps_disjoint_boxes():
    boxes = np.array([[0, 0, 100, 40], [5, 2, 105, 42], [200, 200, 260, 230], [0, 0, 100, 40]], np.float64)
    scores = np.array([0.7, 0.9, 0.5, 0.2])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_threshold_decides_what_counts_as_overlap():
    boxes = np.array([[0, 0, 100, 100], [50, 0, 150, 100]], np.float64)  # IoU 1/3
    assert nms(boxes, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.3).tolist() == [0]


def test_letterbox_keeps_aspect_centres_and_inverts_ink():
    page = np.full((500, 1000), 255, np.uint8)
    page[100:150, 200:400] = 0
    canvas, lb = letterbox(page, 640)
    assert canvas.shape == (640, 640) and canvas.dtype == np.float32
    assert lb.scale == pytest.approx(0.64) and lb.pad_x == 0 and lb.pad_y == 160
    assert canvas[0, 0] == 0.0  # padding is paper
    assert canvas[160 + 80, 200] == pytest.approx(1.0, abs=0.01)  # ink at (y=125, x=312) of the page
    assert canvas[160 + 10, 10] == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("shape", [(640, 640), (2200, 1700), (300, 900), (1, 5), (641, 640)])
def test_letterbox_gives_the_reference_arithmetic_exactly(shape):
    # the table lookup and OpenCV padding must not change a single model input value
    page = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    canvas, lb = letterbox(page, 640)
    nw, nh = max(1, round(shape[1] * lb.scale)), max(1, round(shape[0] * lb.scale))
    interp = cv2.INTER_AREA if lb.scale < 1 else cv2.INTER_LINEAR
    expected = np.zeros((640, 640), np.float32)
    expected[lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw] = (
        1.0 - cv2.resize(page, (nw, nh), interpolation=interp).astype(np.float32) / 255.0)
    assert canvas.shape == (640, 640) and canvas.dtype == np.float32 and canvas.flags.c_contiguous
    assert np.array_equal(canvas, expected)


def test_letterbox_takes_a_float_page_too():
    page = np.random.default_rng(0).random((64, 40)).astype(np.float32) * 255  # not uint8: no lookup table
    canvas, lb = letterbox(page, 64)
    assert (lb.pad_x, lb.pad_y) == (12, 0)
    assert np.array_equal(canvas[:, 12:52], 1.0 - page / 255.0) and not canvas[:, :12].any()


def test_boxes_map_back_to_page_pixels_and_clip():
    lb = Letterbox(scale=0.64, pad_x=0, pad_y=160, width=1000, height=500)
    x0, y0, x1, y1 = _to_page(np.array([128.0, 224.0, 256.0, 256.0]), lb)
    assert (x0, y0, x1, y1) == pytest.approx((200.0, 100.0, 400.0, 150.0))
    assert _to_page(np.array([-20.0, 100.0, 700.0, 700.0]), lb) == pytest.approx((0.0, 0.0, 1000.0, 500.0))


def test_crop_adds_context_and_stays_inside_the_image():
    img = np.arange(100 * 200, dtype=np.uint32).reshape(100, 200).astype(np.uint8)
    c = crop(img, Detection((10.0, 10.0, 110.0, 60.0), 0.9), padding=0.1)
    assert c.shape == (60, 120)  # 50 + 2 * 5 rows, 100 + 2 * 10 columns
    edge = crop(img, Detection((0.0, 0.0, 200.0, 100.0), 0.9), padding=0.5)
    assert edge.shape == (100, 200)


def test_crop_isolate_paints_out_ink_wholly_in_the_margin():
    img = np.full((200, 400), 235, np.uint8)  # scanned paper, dark gray ink
    img[95:105, 110:290] = 30  # the "signature": inside the box
    img[95:100, 290:316] = 30  # a stroke overshooting the box: connected, must stay
    img[150:156, 120:280] = 30  # a printed label in the margin below the box
    det = Detection((100.0, 60.0, 300.0, 140.0), 0.9)
    plain = crop(img, det, padding=0.25)
    iso = crop(img, det, padding=0.25, isolate=True)
    assert plain.shape == iso.shape == (120, 300)
    oy, ox = 40, 50  # crop origin: (60 - 20, 100 - 50)
    assert (plain[150 - oy:156 - oy, 120 - ox:280 - ox] == 30).all()
    assert (iso[150 - oy:156 - oy, 120 - ox:280 - ox] == 255).all()  # label gone
    assert (iso[95 - oy:105 - oy, 110 - ox:290 - ox] == 30).all()  # signature kept
    assert (iso[95 - oy:100 - oy, 290 - ox:316 - ox] == 30).all()  # overshoot kept


def test_crop_isolate_paints_out_a_label_that_the_box_edge_cuts_through():
    img = np.full((200, 400), 235, np.uint8)
    img[80:120, 150:152] = 30  # a vertical stroke through the box's middle
    img[80:82, 150:250] = 30  # joined to a horizontal one
    img[133:138, 120:280] = 30  # a printed label inside the box's bottom tenth (box 60..140)
    det = Detection((100.0, 60.0, 300.0, 140.0), 0.9)
    iso = crop(img, det, padding=0.25, isolate=True)
    oy, ox = 40, 50
    assert (iso[133 - oy:138 - oy, 120 - ox:280 - ox] == 255).all()  # the label is gone
    assert (iso[80 - oy:120 - oy, 150 - ox:152 - ox] == 30).all()  # the signature stays
    assert (iso[80 - oy:82 - oy, 150 - ox:250 - ox] == 30).all()
    kept = crop(img, det, padding=0.25, isolate=True, core=0.0)
    assert (kept[133 - oy:138 - oy, 120 - ox:280 - ox] == 30).all()  # reaches the box itself


def test_rescorer_input_keeps_aspect_adds_context_and_centres():
    from sigedge.detect import rescorer_input

    canvas = np.zeros((200, 400), np.float32)
    canvas[90:110, 100:300] = 1.0  # a 200 x 20 ink bar, the box exactly
    out = rescorer_input(canvas, (100.0, 90.0, 300.0, 110.0), 64, 160, context=0.25)
    assert out.shape == (64, 160) and out.dtype == np.float32
    # region cut: 300 x 30 px (box + 25 % each side) fitted by width: scale 160/300
    rows = np.nonzero(out.max(axis=1) > 0.5)[0]
    cols = np.nonzero(out.max(axis=0) > 0.5)[0]
    assert abs((cols[-1] - cols[0] + 1) - 200 * 160 / 300) <= 2  # the bar keeps its length
    assert abs((rows[-1] - rows[0] + 1) - 20 * 160 / 300) <= 2  # and its thickness: aspect kept
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1.5  # centred vertically, paper around it
    assert out[:20].max() == 0.0 and out[-20:].max() == 0.0


def test_rescorer_input_clips_a_box_hanging_off_the_canvas():
    from sigedge.detect import rescorer_input

    canvas = np.ones((100, 100), np.float32)
    out = rescorer_input(canvas, (-50.0, 90.0, 20.0, 140.0), 32, 64, context=0.1)
    assert out.shape == (32, 64) and np.isfinite(out).all() and out.max() == 1.0


class _FakeRescorer:
    """Stands in for the TFLite rescorer: logit +4 for crops with ink, -4 for blank ones."""

    input_shape = (1, 16, 32, 1)

    def __call__(self, x):
        return np.array([4.0 if x.max() > 0.5 else -4.0], np.float32)


def _detector_with(rescorer, threshold: float):
    from sigedge.detect import DetectOptions, Detector

    det = Detector.__new__(Detector)
    det.options = DetectOptions()
    det._rescorers = [] if rescorer is None else list(rescorer) if isinstance(rescorer, list) else [rescorer]
    det.rescore_context = 0.1
    det.candidate_threshold = 0.05
    det.max_rescored = 24
    det.max_overlap = 0.5
    det.score_threshold = threshold
    return det


def test_rescore_is_the_geometric_mean_of_both_probabilities():
    det = _detector_with(_FakeRescorer(), 0.5)
    canvas = np.zeros((100, 100), np.float32)
    canvas[10:20, 10:40] = 1.0
    boxes = np.array([[10, 10, 40, 20], [60, 60, 90, 70]], np.float32)  # inked, blank
    fused = det.rescore(canvas, boxes, np.array([0.64, 0.64], np.float32))
    p_ink, p_blank = 1 / (1 + np.exp(-4.0)), 1 / (1 + np.exp(4.0))
    assert fused == pytest.approx([np.sqrt(0.64 * p_ink), np.sqrt(0.64 * p_blank)], rel=1e-5)
    assert _detector_with(None, 0.5).rescore(canvas, boxes, np.array([0.3, 0.2])) == pytest.approx([0.3, 0.2])


class _ConstantRescorer:
    """A rescorer of another input size that gives every crop the same logit."""

    input_shape = (1, 8, 8, 1)

    def __init__(self, logit: float):
        self.logit = logit

    def __call__(self, x):
        assert x.shape == (8, 8, 1)  # cut at its own input size
        return np.array([self.logit], np.float32)


def test_an_ensemble_of_rescorers_averages_their_logits():
    det = _detector_with([_FakeRescorer(), _ConstantRescorer(-2.0)], 0.5)
    canvas = np.zeros((100, 100), np.float32)
    canvas[10:20, 10:40] = 1.0
    boxes = np.array([[10, 10, 40, 20], [60, 60, 90, 70]], np.float32)  # inked, blank
    p = det.rescorer_probabilities(canvas, boxes)
    assert p == pytest.approx([1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(3.0))], rel=1e-5)  # (4-2)/2, (-4-2)/2
    assert det.rescorer_logits(canvas, boxes) == pytest.approx(np.array([[4.0, -4.0], [-2.0, -2.0]]))  # member x box
    assert det.rescores and not _detector_with(None, 0.5).rescores


def test_rescorer_roles_reads_both_manifest_forms():
    from sigedge.detect import rescorer_roles

    assert rescorer_roles({"rescoring": {"models": ["rescorer", "rescorer_2"]}}) == ["rescorer", "rescorer_2"]
    assert rescorer_roles({"rescoring": {"model": "rescorer"}}) == ["rescorer"]
    assert rescorer_roles({"decoding": {}}) == []


def test_detector_refuses_a_rescorer_count_the_manifest_does_not_name():
    from sigedge.bundle import ModelBundle
    from sigedge.detect import Detector, rescorer_roles
    from sigedge.errors import ModelError

    bundle = ModelBundle.load(None)
    spec = bundle.model("detector")
    roles = rescorer_roles(spec.raw)
    assert roles  # the shipped detector re-scores its candidates
    with pytest.raises(ModelError, match="rescorer"):
        Detector(spec, rescorers=[bundle.model(roles[0])] * (len(roles) + 1))
    assert Detector(spec, rescorers=[bundle.model(r) for r in roles]).rescores


def test_detect_reorders_and_thresholds_on_the_fused_score(monkeypatch):
    det = _detector_with(_FakeRescorer(), 0.5)
    canvas = np.zeros((100, 100), np.float32)
    canvas[60:70, 60:90] = 1.0  # only the weaker candidate has ink
    boxes = np.array([[10, 10, 40, 20], [60, 60, 90, 70]], np.float32)
    lb = Letterbox(scale=0.5, pad_x=0, pad_y=0, width=200, height=200)
    seen = {}

    def candidates(page, thr):
        seen["threshold"] = thr
        return canvas, boxes, np.array([0.9, 0.4], np.float32), lb

    monkeypatch.setattr(det, "candidates", candidates)
    found = det.detect(np.zeros((200, 200), np.uint8))
    assert seen["threshold"] == 0.05  # candidates are taken below the final threshold
    assert len(found) == 1  # the blank, high-scoring one fell under 0.5 after rescoring
    assert found[0].box == (120.0, 120.0, 180.0, 140.0)  # mapped back to page pixels
    assert found[0].score == pytest.approx(np.sqrt(0.4 / (1 + np.exp(-4.0))), rel=1e-5)


def test_detect_rescores_only_the_best_candidates(monkeypatch):
    det = _detector_with(_FakeRescorer(), 0.0)
    det.max_rescored = 2
    canvas = np.ones((100, 100), np.float32)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    lb = Letterbox(scale=1.0, pad_x=0, pad_y=0, width=100, height=100)
    monkeypatch.setattr(det, "candidates", lambda page, thr: (canvas, boxes, np.array([0.9, 0.5, 0.3]), lb))
    found = det.detect(np.zeros((100, 100), np.uint8))
    assert [d.box[0] for d in found] == [0.0, 20.0]


def test_rank_rescored_fuses_ranks_thresholds_and_drops_swallowing_boxes():
    from sigedge.detect import rank_rescored

    boxes = np.array([[0, 0, 10, 10],      # weak detector score, sure rescorer
                      [50, 50, 60, 60],    # strong detector score, rescorer says no
                      [0, 0, 30, 10],      # swallows the first box
                      [80, 80, 90, 90]],   # under the threshold after fusion
                     np.float32)
    order, fused = rank_rescored(boxes, np.array([0.25, 0.81, 0.64, 0.04]), np.array([1.0, 0.16, 0.64, 0.25]),
                                 score_threshold=0.2, max_overlap=0.5)
    assert fused == pytest.approx([0.5, 0.36, 0.64, 0.1])
    assert order == [2, 1]  # box 0 lies wholly inside the better-scored box 2; box 3 is under 0.2
    order, _ = rank_rescored(boxes, np.array([0.25, 0.81, 0.64, 0.04]), np.array([1.0, 0.16, 0.64, 0.25]),
                             score_threshold=0.2, max_overlap=1.01)
    assert order == [2, 0, 1]  # no overlap rule: fused order
    assert rank_rescored(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.1, 0.5)[0] == []


def test_suppress_overlapping_drops_a_box_swallowing_a_better_one():
    from sigedge.detect import suppress_overlapping

    boxes = np.array([[100, 100, 200, 160],   # signature 1
                      [300, 110, 400, 150],   # signature 2
                      [150, 90, 380, 170],    # one box over both (IoU with each < 0.5)
                      [210, 100, 290, 160]], np.float32)  # between them, touching neither
    assert float(iou_matrix(boxes[2:3], boxes[:1]).max()) < 0.5
    assert suppress_overlapping(boxes, [0, 1, 2, 3], 0.5) == [0, 1, 3]
    assert suppress_overlapping(boxes, [2, 0, 1, 3], 0.5) == [2]  # order decides who stays: it swallows all
    assert suppress_overlapping(boxes, [0, 1, 2, 3], 1.01) == [0, 1, 2, 3]
