"""The evaluation runner with fake backends: perfect boxes score 1.0, shifted boxes match direct pycocotools."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from eval_synth import direct_cocoeval, gt_as_detections, make_gt
from ppyoloe_sod.errors import DatasetError
from ppyoloe_sod.eval.evaluate import evaluate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Images whose top-left pixel encodes their id (B = id // 256, G = id % 256), and their json."""
    root = tmp_path_factory.mktemp("ds")
    gt = make_gt(seed=11, num_images=7, crowd=False)
    (root / "images").mkdir()
    for im in gt["images"]:
        im["file_name"] = f"images/{im['id']}.png"
        img = np.zeros((im["height"], im["width"], 3), dtype=np.uint8)
        img[0, 0] = (im["id"] // 256, im["id"] % 256, 7)
        cv2.imwrite(str(root / im["file_name"]), img)
    ann = root / "instance_val.json"
    ann.write_text(json.dumps(gt))
    return gt, ann, root


class FakeBackend:
    """Returns the ground truth of each image it is shown, optionally shifted right by (1..2) x shift x width."""

    def __init__(self, gt, shift=0.0, as_tensor=False):
        self.sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
        self.dets = gt_as_detections(gt)
        if shift:
            rng = np.random.default_rng(0)
            for d in self.dets.values():
                w = (d[:, 4] - d[:, 2]) * rng.uniform(1, 2, size=len(d))
                d[:, 2] += shift * w
                d[:, 4] += shift * w
        self.as_tensor = as_tensor
        self.batches = []

    def __call__(self, images):
        self.batches.append(len(images))
        out = []
        for img in images:
            assert img.dtype == np.uint8 and img.ndim == 3 and img[0, 0, 2] == 7  # BGR, as read from disk
            image_id = int(img[0, 0, 0]) * 256 + int(img[0, 0, 1])
            assert img.shape[:2] == self.sizes[image_id]
            d = self.dets[image_id].astype(np.float32)
            if self.as_tensor:
                import torch

                d = torch.from_numpy(d)
            out.append(d)
        return out


def test_perfect_backend_scores_one(dataset, tmp_path, capsys):
    gt, ann, root = dataset
    fake = FakeBackend(gt)
    report = evaluate(fake, ann, root, batch_size=3, output_dir=tmp_path, progress=False)
    assert fake.batches == [3, 3, 1]
    m = report["metrics"]
    assert m["AP"] == m["AP50"] == m["AP75"] == m["AR100"] == 1.0
    assert all(row["AP"] == 1.0 for row in m["per_class"] if row["num_gt"])
    saved = json.loads((tmp_path / "evaluate_result.json").read_text())
    assert saved["done_flag"] is True and saved["metrics"]["AP"] == 1.0
    assert saved["timing"]["images"] == 7 and saved["timing"]["detect_ms_per_image"] >= 0
    assert (tmp_path / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluate_result.json", "pr_curves.png"]  # no temp files
    out = capsys.readouterr().out
    assert "COCO bbox metrics (7 images" in out and "ms/image" in out
    assert "visdrone" not in report  # the json has no ignored regions


def test_shifted_backend_equals_pycocotools(dataset, tmp_path):
    gt, ann, root = dataset
    fake = FakeBackend(gt, shift=0.15, as_tensor=True)
    report = evaluate(fake, ann, root, batch_size=2, output_dir=tmp_path, plot=False, verbose=False, progress=False)
    ref = direct_cocoeval(ann, {k: v.astype(np.float32) for k, v in FakeBackend(gt, shift=0.15).dets.items()}).stats
    print("shifted AP", report["metrics"]["AP"], "pycocotools", ref[0])
    assert report["metrics"]["stats"] == ref.tolist()
    assert 0.1 < report["metrics"]["AP"] < report["metrics"]["AP50"] == 1.0  # IoU 0.54..0.74 per box
    again = evaluate(FakeBackend(gt, shift=0.15), ann, root, batch_size=5, verbose=False, progress=False)
    assert again["metrics"] == report["metrics"]  # batching does not change anything


def test_visdrone_applied_when_json_has_ignored_regions(dataset, tmp_path):
    gt, _, root = dataset
    im = gt["images"][0]
    with_regions = {**gt, "ignored_regions": [{"image_id": im["id"], "bbox": [0, 0, im["width"], im["height"]]}]}
    ann = tmp_path / "val_ignored.json"
    ann.write_text(json.dumps(with_regions))
    report = evaluate(FakeBackend(gt), ann, root, verbose=False, progress=False)
    n_first = sum(1 for a in gt["annotations"] if a["image_id"] == im["id"])
    assert report["visdrone"]["ignored"]["removed_detections"] == n_first
    assert report["visdrone"]["ignored"]["removed_gt"] == n_first
    assert report["visdrone"]["AP"] == 1.0


def test_backend_returning_wrong_count(dataset):
    gt, ann, root = dataset
    with pytest.raises(ValueError, match="returned 1 results for a batch of 2 images"):
        evaluate(lambda imgs: [np.zeros((0, 6))], ann, root, batch_size=2, verbose=False, progress=False)
    with pytest.raises(DatasetError, match=r"shape \(3,\)"):
        evaluate(lambda imgs: [np.zeros(3)] * len(imgs), ann, root, verbose=False, progress=False)


def test_missing_images_and_empty_json(dataset, tmp_path):
    gt, ann, root = dataset
    with pytest.raises(DatasetError, match="7 of 7 images .* not under"):
        evaluate(FakeBackend(gt), ann, tmp_path, verbose=False, progress=False)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**gt, "images": []}))
    with pytest.raises(DatasetError, match="'images'"):
        evaluate(FakeBackend(gt), empty, root, verbose=False, progress=False)
