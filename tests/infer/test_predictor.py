"""The predictor: PaddleX preprocessing, box mapping, thresholds, batching, devices and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ppyoloe_sod.errors import ConfigError, ImageReadError
from ppyoloe_sod.infer.backends import TorchBackend
from ppyoloe_sod.infer.predictor import (DetPredictor, check_threshold, filter_and_clip, preprocess,
                                         resolve_device)
from ppyoloe_sod.nn.detector import RawOutput

from infer_synth import scene

LABELS = ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor")


# --- pieces -------------------------------------------------------------------------------------------------

def test_preprocess_is_rgb_cubic_resize_over_255():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    chw, (sy, sx) = preprocess(bgr, (64, 96))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    expected = cv2.resize(rgb, (96, 64), interpolation=cv2.INTER_CUBIC).astype(np.float32).transpose(2, 0, 1) / 255
    assert chw.shape == (3, 64, 96) and chw.dtype == np.float32 and chw.flags.c_contiguous
    np.testing.assert_array_equal(chw, expected)
    assert (sy, sx) == (64 / 37, 96 / 53)
    # A linear resize gives different pixels: the interpolation really is cubic.
    linear = cv2.resize(rgb, (96, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32).transpose(2, 0, 1) / 255
    assert np.abs(chw - linear).max() > 0.01


def test_preprocess_same_size_is_not_resampled():
    bgr = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    chw, scale = preprocess(bgr, (32, 64))
    np.testing.assert_array_equal(chw * 255, bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    assert scale == (1.0, 1.0)


def test_check_threshold():
    assert check_threshold(None, 10) is None
    assert check_threshold(0.3, 10) == 0.3 and check_threshold(1, 10) == 1.0
    assert check_threshold({3: 0.2, np.int64(4): 1}, 10) == {3: 0.2, 4: 1.0}
    with pytest.raises(ConfigError, match=r"class id 10.*0\.\.9"):
        check_threshold({10: 0.5}, 10)
    with pytest.raises(ConfigError, match="class id -1"):
        check_threshold({-1: 0.5}, 10)
    with pytest.raises(ConfigError, match="class id 'car'"):
        check_threshold({"car": 0.5}, 10)
    with pytest.raises(ConfigError, match="class 2 must be a number"):
        check_threshold({2: "high"}, 10)
    for bad in ("0.5", True, [0.5]):
        with pytest.raises(ConfigError, match="threshold must be"):
            check_threshold(bad, 10)


def test_filter_and_clip_strict_threshold_clipping_and_order():
    dets = np.array([
        [0, 0.9, -5.0, 10.0, 30.0, 40.0],  # x1 clipped to 0
        [0, 0.5, 1.0, 1.0, 5.0, 5.0],  # exactly at threshold: dropped (strict >)
        [3, 0.7, 90.0, 50.0, 130.0, 70.0],  # x2 clipped to W=100, y2 to H=60
        [3, 0.6, 101.0, 10.0, 120.0, 20.0],  # entirely right of the image: no area left, dropped
        [5, 0.55, 10.0, 10.0, 10.0, 20.0],  # zero width: dropped
        [9, 0.51, 20.0, 20.0, 30.0, 30.0],
    ], dtype=np.float32)
    out = filter_and_clip(dets, 0.5, width=100, height=60, labels=LABELS)
    assert [(b["cls_id"], b["label"]) for b in out] == [(0, "pedestrian"), (3, "car"), (9, "motor")]
    assert out[0]["coordinate"] == [0.0, 10.0, 30.0, 40.0]
    assert out[1]["coordinate"] == [90.0, 50.0, 100.0, 60.0]
    assert out[0]["score"] == pytest.approx(0.9) and type(out[0]["score"]) is float
    # dict: class 0 needs > 0.95, class 9 > 0.5 (default), class 3 > 0.65
    by_dict = filter_and_clip(dets, {0: 0.95, 3: 0.65}, 100, 60, LABELS)
    assert [b["cls_id"] for b in by_dict] == [3, 9]
    assert filter_and_clip(np.zeros((0, 6), np.float32), 0.5, 10, 10, LABELS) == []


def test_threshold_compared_in_float32():
    # 0.3 as float32 is 0.30000001192...; PaddleX (numpy 2) compares float32 scores with the threshold cast to
    # float32, so a score equal to float32(0.3) is NOT above 0.3.
    dets = np.array([[1, np.float32(0.3), 0, 0, 5, 5]], dtype=np.float32)
    assert filter_and_clip(dets, 0.3, 10, 10, LABELS) == []
    assert filter_and_clip(dets, {1: 0.3}, 10, 10, LABELS) == []


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="Unknown device 'tpu:0'"):
        resolve_device("tpu:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == torch.device("cuda", 0)
    assert resolve_device("gpu") == torch.device("cuda", 0)
    assert resolve_device("GPU:1") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("gpu:1,2,3") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        resolve_device("gpu:2")


# --- box mapping with a scripted backend -------------------------------------------------------------------

class ScriptedBackend:
    """Returns hand-made head outputs: a few anchors with known classes, scores and DFL distances."""

    name = "scripted"
    device = torch.device("cpu")

    def __init__(self, n_anchors: int, num_classes: int, bins: int, plan: list[tuple[int, int, float, tuple]]):
        self.plan, self.shape, self.bins = plan, (n_anchors, num_classes), bins
        self.calls: list[int] = []

    def run(self, images):
        b = images.shape[0]
        self.calls.append(b)
        cls = torch.full((b, *self.shape), -20.0)
        reg = torch.zeros(b, self.shape[0], 4 * self.bins)
        for anchor, c, logit, bins_ltrb in self.plan:
            cls[:, anchor, c] = logit
            for side, j in enumerate(bins_ltrb):
                reg[:, anchor, side * self.bins + j] = 60.0  # one-hot softmax: distance = proj[j]
        return RawOutput(cls, reg)


@pytest.fixture()
def scripted(random_detector):
    """anchors at 320x320: stride 32 -> 100, stride 16 -> 400, stride 8 -> 1600; proj = -2..7 (bins 10)."""
    spec = random_detector.spec
    plan = [
        (500 + 5 * 40 + 7, 4, 2.0, (5, 3, 6, 4)),  # stride 8, row 5, col 7: point (60, 44); l,t,r,b = 3,1,4,2
        (9, 1, 0.3, (2, 9, 9, 2)),  # stride 32, row 0, col 9: point (304, 16); l,t,r,b = 0,7,7,0
        (100 + 3, 2, 0.0, (3, 3, 3, 3)),  # score exactly 0.5
    ]
    backend = ScriptedBackend(2100, 10, 10, plan)
    return DetPredictor(random_detector, backend, spec.name, spec.classes, (320, 320)), backend


def test_boxes_are_mapped_to_the_original_image_and_clipped(scripted):
    predictor, _ = scripted
    image = np.zeros((160, 640, 3), np.uint8)  # scale_factor (sy, sx) = (2, 0.5)
    [res] = list(predictor.predict(image))
    assert res.input_path is None and res.page_index is None
    assert [(b["cls_id"], b["label"]) for b in res.boxes] == [(1, "people"), (4, "van")]
    people, van = res.boxes
    # van: input-pixel box (60-24, 44-8, 60+32, 44+16) = (36, 36, 92, 60), divided by (sx, sy) = (0.5, 2)
    np.testing.assert_allclose(van["coordinate"], [72, 18, 184, 30], atol=1e-3)
    assert van["score"] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    # people: (304 - 0, 16 - 224, 304 + 224, 16 + 0) = (304, -208, 528, 16) -> (608, -104, 1056, 8) -> clipped
    np.testing.assert_allclose(people["coordinate"], [608, 0, 640, 8], atol=1e-3)
    # The class-2 box scores exactly 0.5: kept only by a lower threshold.
    lower = list(predictor.predict(image, threshold=0.4))[0].boxes
    assert [b["cls_id"] for b in lower] == [1, 2, 4]
    by_dict = list(predictor.predict(image, threshold={4: 0.9}))[0].boxes
    assert [b["cls_id"] for b in by_dict] == [1]


def test_batching_runs_one_forward_per_batch(scripted):
    predictor, backend = scripted
    images = [np.zeros((160 + 10 * i, 640, 3), np.uint8) for i in range(5)]
    results = list(predictor.predict(images, batch_size=2))
    assert backend.calls == [2, 2, 1]
    assert len(results) == 5
    # Every image gets its own scale factor inside a batch: the van's y-range follows each image's height.
    for res, img in zip(results, images):
        van = [b for b in res.boxes if b["cls_id"] == 4][0]
        sy = 320 / img.shape[0]
        np.testing.assert_allclose(van["coordinate"][1::2], [36 / sy, 60 / sy], rtol=1e-5)


def test_progress_bar_for_many_inputs(scripted, capsys):
    predictor, _ = scripted
    list(predictor.predict([np.zeros((32, 32, 3), np.uint8)] * 3))
    assert "predict" not in capsys.readouterr().err
    list(predictor.predict([np.zeros((32, 32, 3), np.uint8)] * 12, batch_size=4))
    assert "12/12" in capsys.readouterr().err


def test_batch_size_validated(scripted):
    predictor, _ = scripted
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            list(predictor.predict(np.zeros((8, 8, 3), np.uint8), batch_size=bad))


# --- the real network (random weights) ---------------------------------------------------------------------

def _assert_same_boxes(a, b, score_tol, coord_tol):
    """Same detections up to float noise; boxes of near-equal score may swap places, so match each one."""
    unused = list(range(len(b)))
    for box in a:
        cands = [j for j in unused if b[j]["cls_id"] == box["cls_id"]]
        assert cands, f"no match for {box}"
        j = min(cands, key=lambda j: np.abs(np.subtract(b[j]["coordinate"], box["coordinate"])).max())
        assert np.abs(np.subtract(b[j]["coordinate"], box["coordinate"])).max() <= coord_tol, (box, b[j])
        assert abs(b[j]["score"] - box["score"]) <= score_tol, (box, b[j])
        unused.remove(j)
    assert not unused


def _key(boxes):
    return [(b["cls_id"], round(b["score"], 4), *[round(v, 2) for v in b["coordinate"]]) for b in boxes]


def test_real_model_thresholds_and_batch_equivalence(small_predictor):
    images = [scene(300, 400, seed=1), scene(480, 270, seed=2)]
    everything = list(small_predictor.predict(images, batch_size=2, threshold=0.0))
    one_by_one = list(small_predictor.predict(images, batch_size=1, threshold=0.3))
    for a, b in zip(everything, one_by_one):
        a_boxes = [x for x in a.boxes if x["score"] > 0.3]
        # Batched float32 convolutions differ from single ones by ~1e-5: no box sits that close to 0.3 here.
        assert all(abs(x["score"] - 0.3) > 1e-3 for x in a.boxes)
        assert len(a_boxes) == len(b.boxes) > 0
        _assert_same_boxes(a_boxes, b.boxes, score_tol=1e-4, coord_tol=2e-2)
    # Thresholding only filters the NMS output (order kept): compare with filtering the threshold-0 result.
    rule = {0: 0.7, 3: 0.3}
    found = {}
    for thr in (0.5, rule):
        got = list(small_predictor.predict(images, batch_size=2, threshold=thr))
        found[str(thr)] = sum(b["cls_id"] == 3 for r in got for b in r.boxes)
        for res, full, img in zip(got, everything, images):
            limit = (lambda c: rule.get(c, 0.5)) if isinstance(thr, dict) else (lambda c: thr)
            expected = [b for b in full.boxes if np.float32(b["score"]) > np.float32(limit(b["cls_id"]))]
            assert _key(res.boxes) == _key(expected)
            h, w = img.shape[:2]
            for b in res.boxes:
                x1, y1, x2, y2 = b["coordinate"]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    # The low class-3 threshold finds class-3 boxes the plain 0.5 misses (the comparison is not vacuous).
    assert found[str(rule)] > found["0.5"]


def test_threshold_priority(random_detector, small_predictor):
    spec = random_detector.spec
    image = scene(320, 320, seed=5)
    full = list(small_predictor.predict(image, threshold=0.0))[0].boxes
    scores = sorted(b["score"] for b in full)
    t_create, t_call = scores[len(scores) // 2], scores[len(scores) // 4]

    def count(pred, **kw):
        return len(list(pred.predict(image, **kw))[0].boxes)

    expect = lambda t: sum(np.float32(s) > np.float32(t) for s in scores)  # noqa: E731
    with_default = DetPredictor(random_detector, small_predictor.backend, spec.name, spec.classes, (320, 320),
                                threshold=t_create)
    assert count(small_predictor) == expect(0.5)  # nothing given: the model's default, 0.5
    assert count(with_default) == expect(t_create)  # create_model's threshold
    assert count(with_default, threshold=t_call) == expect(t_call)  # predict's threshold wins
    assert expect(0.5) != expect(t_create) != expect(t_call)


def test_gray_rgba_16bit_files_work(small_predictor, tmp_path):
    gray = cv2.cvtColor(scene(256, 320, seed=7), cv2.COLOR_BGR2GRAY)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full(gray.shape, 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 256)
    inputs = [bgr, str(tmp_path / "gray.png"), str(tmp_path / "rgba.png"), str(tmp_path / "deep.png")]
    # One image per forward: identical inputs then give bit-identical scores on any CPU (positions in one batch may
    # round differently, and a box here scores within 1e-4 of 0.3).
    results = list(small_predictor.predict(inputs, batch_size=1, threshold=0.3))
    assert len(results[0].boxes) > 0
    for res in results[1:]:
        assert res.input_img.shape == (256, 320, 3)
        assert _key(res.boxes) == _key(results[0].boxes)


def test_bad_inputs_through_predict(small_predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cases = [
        (str(tmp_path / "missing.png"), "missing.png"),
        (str(tmp_path / "empty"), "empty"),
        (str(tmp_path / "corrupt.jpg"), "corrupt.jpg"),
        (12345, "Unsupported input of type int"),
    ]
    for bad, message in cases:
        with pytest.raises(ImageReadError, match=message):
            list(small_predictor.predict(bad))
    with pytest.raises(ConfigError, match="class id 12"):
        list(small_predictor.predict(np.zeros((8, 8, 3), np.uint8), threshold={12: 0.1}))


@pytest.mark.slow
def test_create_model_end_to_end(sod_s_weights, random_detector, tmp_path):
    """The public entry point at the model's real input size (640), loading our safetensors file."""
    from ppyoloe_sod import boxes as box_ops
    from ppyoloe_sod.infer.predictor import create_model

    image = scene(360, 480, seed=11)
    cv2.imwrite(str(tmp_path / "street.jpg"), image)
    model = create_model("PP-YOLOE_plus_SOD-S", model_dir=str(sod_s_weights), device="cpu", threshold=0.4)
    assert model.backend.name == "torch" and model.input_size == (640, 640)
    [res] = list(model.predict(str(tmp_path / "street.jpg")))
    assert res.input_path == str(tmp_path / "street.jpg") and len(res.boxes) > 0

    # Independent expectation straight from the saved network (the fixture's in-memory, unfused copy; the
    # predictor folds BN and RepVGG branches, which moves this random network's float32 results by ~1e-4).
    rgb = cv2.resize(cv2.imread(str(tmp_path / "street.jpg"))[:, :, ::-1], (640, 640), interpolation=cv2.INTER_CUBIC)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / 255)[None]
    with torch.no_grad():
        raw = random_detector(x)
    points, strides = random_detector.anchors(640, 640)
    [dets] = box_ops.postprocess(raw.cls_logits, raw.reg_logits, points, strides, random_detector.proj,
                                 torch.tensor([[640 / 360, 640 / 480]]))
    dets = dets[dets[:, 1] > 0.4].numpy()
    dets[:, [2, 4]] = dets[:, [2, 4]].clip(0, 480)
    dets[:, [3, 5]] = dets[:, [3, 5]].clip(0, 360)
    dets = dets[(dets[:, 4] > dets[:, 2]) & (dets[:, 5] > dets[:, 3])]
    expected = [{"cls_id": int(d[0]), "score": float(d[1]), "coordinate": d[2:].tolist()} for d in dets]
    assert abs(len(res.boxes) - len(expected)) <= 2  # a box within ~1e-4 of the threshold may flip
    common = [b for b in res.boxes if abs(b["score"] - 0.4) > 1e-3]
    _assert_same_boxes(common, [e for e in expected if abs(e["score"] - 0.4) > 1e-3], score_tol=3e-4,
                       coord_tol=5e-2)
    assert {b["label"] for b in res.boxes} <= set(LABELS)


# --- argument checks, the pixel limit and the command line's report ---------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -0.1, 1.5, {3: float("nan")},
                                 {3: -1}, {3: 2.0}, {3: float("inf")}])
def test_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(ConfigError, match=r"threshold.* must be between 0 and 1"):
        check_threshold(bad, 10)
    assert check_threshold(0.0, 10) == 0.0 and check_threshold({3: 1.0}, 10) == {3: 1.0}  # the ends are fine


def test_threshold_errors_name_the_argument_as_set(blind_predictor):
    from ppyoloe_sod.errors import interface

    with pytest.raises(ConfigError, match=r"^threshold must be between"):
        list(blind_predictor.predict(np.zeros((8, 8, 3), np.uint8), threshold=-1))
    with interface("cli"), pytest.raises(ConfigError, match=r"^Predict\.threshold for class 1 must be between"):
        check_threshold({1: float("inf")}, 10)


def test_max_pixels_argument(blind_predictor, tmp_path):
    from ppyoloe_sod.errors import interface
    from ppyoloe_sod.infer.predictor import check_max_pixels

    assert check_max_pixels(None) is None and check_max_pixels(5) == 5
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ConfigError, match="max_pixels must be a positive integer"):
            check_max_pixels(bad)
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((30, 40, 3), np.uint8))
    blind_predictor.max_pixels = 1000
    with pytest.raises(ImageReadError, match=r"big\.png.*40x30.*limit of 1,000.*create_model\(\.\.\., max_pixels=N\)"):
        list(blind_predictor.predict(str(tmp_path / "big.png")))
    with interface("cli"), pytest.raises(ImageReadError, match=r"-o Predict\.max_pixels=N \(None: no limit\)"):
        list(blind_predictor.predict(str(tmp_path / "big.png")))
    blind_predictor.max_pixels = None
    assert len(list(blind_predictor.predict(str(tmp_path / "big.png")))) == 1


@pytest.fixture()
def cli_predict(blind_predictor, monkeypatch):
    """run_predict with create_model replaced by the blind predictor (the arguments it got are recorded)."""
    from ppyoloe_sod.config import load_config
    from ppyoloe_sod.errors import interface
    from ppyoloe_sod.infer import predictor as module

    calls = []

    def fake_create_model(name, **kwargs):
        calls.append(kwargs)
        blind_predictor.max_pixels = kwargs["max_pixels"]
        return blind_predictor

    monkeypatch.setattr(module, "create_model", fake_create_model)

    def run(*overrides):
        with interface("cli"):
            return module.run_predict(load_config(None, ["Global.mode=predict", *overrides])), calls[-1]

    return run


def test_cli_predict_prints_one_line_per_image_and_where_results_are(cli_predict, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "in" / folder / "x.png"), np.zeros((30, 40, 3), np.uint8))
    out = tmp_path / "out"
    count, kwargs = cli_predict(f"Predict.input={tmp_path / 'in'}", f"Global.output={out}")
    assert count == 2 and kwargs["max_pixels"] == 178_956_970
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{tmp_path / 'in' / 'a' / 'x.png'}: 0 boxes -> {out / 'x_res.png'}, x_res.json",
        f"{tmp_path / 'in' / 'b' / 'x.png'}: 0 boxes -> {out / 'x-2_res.png'}, x-2_res.json",
        f"2 result(s) saved under {out.resolve()} (a drawing and a JSON file each)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["x-2_res.json", "x-2_res.png", "x_res.json", "x_res.png"]


def test_cli_predict_print_modes_and_limit(cli_predict, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((30, 40, 3), np.uint8))
    common = (f"Predict.input={tmp_path / 'x.png'}", f"Global.output={tmp_path / 'out'}")
    cli_predict(*common, "Predict.print=full")
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1])["res"]["input_path"] == str(tmp_path / "x.png")
    cli_predict(*common, "Predict.print=none")
    assert capsys.readouterr().out.splitlines() == [f"1 result(s) saved under {(tmp_path / 'out').resolve()} "
                                                    f"(a drawing and a JSON file each)"]
    with pytest.raises(ConfigError, match="Predict.print is 'all'; use summary"):
        cli_predict(*common, "Predict.print=all")
    with pytest.raises(ImageReadError, match=r"x\.png.*over the limit of 100 pixels.*-o Predict\.max_pixels=N"):
        cli_predict(*common, "Predict.max_pixels=100")
    _, kwargs = cli_predict(*common, "Predict.max_pixels=None")
    assert kwargs["max_pixels"] is None


def test_summary_line_counts_boxes_by_class(tmp_path):
    from ppyoloe_sod.infer.predictor import summary_line
    from ppyoloe_sod.infer.result import DetResult

    boxes = [{"cls_id": 3, "label": "car", "score": 0.9, "coordinate": [0, 0, 1, 1]}] * 3 + [
        {"cls_id": 0, "label": "pedestrian", "score": 0.8, "coordinate": [0, 0, 1, 1]}]
    page = DetResult("doc.pdf", 1, None, boxes, save_name="doc_1.pdf")
    assert summary_line(page, tmp_path / "doc_1_res.png", tmp_path / "doc_1_res.json") == (
        f"doc.pdf page 1: 4 boxes (car 3, pedestrian 1) -> {tmp_path / 'doc_1_res.png'}, doc_1_res.json")
    array = DetResult(None, None, None, boxes[:1], save_name="array_0007")
    assert summary_line(array, Path("o/array_0007_res.png"), Path("o/array_0007_res.json")).startswith(
        "numpy array (array_0007): 1 box (car 1) -> ")
