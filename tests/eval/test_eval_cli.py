"""`-o Global.mode=evaluate` end to end on a generated dataset in PaddleX's COCO layout."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ppyoloe_sod.__main__ import main
from ppyoloe_sod.infer.predictor import create_model
from ppyoloe_sod.zoo import VISDRONE_CLASSES

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "PP-YOLOE_plus_SOD-S.yaml")


def make_images(root: Path, n: int = 3) -> list[Path]:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    paths = []
    for i in range(n):
        img = np.full((240, 320, 3), 90, np.uint8)
        for _ in range(6):
            x, y = rng.integers(0, 300), rng.integers(0, 220)
            cv2.rectangle(img, (int(x), int(y)), (int(x) + 12, int(y) + 16), [int(v) for v in rng.integers(0, 255, 3)], -1)
        paths.append(root / "images" / f"im{i}.jpg")
        cv2.imwrite(str(paths[-1]), img)
    return paths


def write_gt(root: Path, paths: list[Path], boxes_per_image: list[np.ndarray], categories: list[dict]) -> None:
    images, anns = [], []
    for i, (p, dets) in enumerate(zip(paths, boxes_per_image), 1):
        images.append({"id": i, "file_name": p.name, "width": 320, "height": 240})
        for c, _, x1, y1, x2, y2 in dets.tolist():
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": categories[int(c)]["id"],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (root / "annotations").mkdir()
    doc = {"images": images, "annotations": anns, "categories": categories}
    for split in ("train", "val"):
        (root / "annotations" / f"instance_{split}.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from tests.weights_synth import randomized_model, write_safetensors
    return write_safetensors(randomized_model("PP-YOLOE_plus_SOD-S", seed=3),
                             tmp_path_factory.mktemp("w") / "model.safetensors")


#: randomize_detector's network (seeded: its calibration starts from build_model's random init) with class biases
#: lowered so that on these flat test images only ~140 boxes pass NMS's 0.01 score floor: the top scores are sparse,
#: with gaps far wider than float noise (the widest, ~0.12, keeps 5 boxes on two images).
SPARSE_SEED, CLASS_BIAS_SHIFT = 6, -9.0
MIN_GT_BOXES, MAX_GT_BOXES, MIN_SCORE_GAP = 5, 60, 0.05


@pytest.fixture(scope="module")
def sparse_weights(tmp_path_factory) -> tuple[Path, Path]:
    """(weights with image-dependent, well separated scores; the same with every class output moved to the next
    class, so the same boxes carry other labels)."""
    from tests.infer.infer_synth import randomize_detector
    from tests.weights_synth import write_safetensors

    from ppyoloe_sod.models import build_model

    folder = tmp_path_factory.mktemp("sparse")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SPARSE_SEED)
        detector = randomize_detector(build_model("PP-YOLOE_plus_SOD-S"), seed=SPARSE_SEED)
    with torch.no_grad():
        for conv in detector.yolo_head.pred_cls:
            conv.bias.add_(CLASS_BIAS_SHIFT)
    right = write_safetensors(detector, folder / "right.safetensors")
    with torch.no_grad():
        for conv in detector.yolo_head.pred_cls:
            conv.weight.copy_(conv.weight.roll(1, dims=0))
            conv.bias.copy_(conv.bias.roll(1, dims=0))
    return right, write_safetensors(detector, folder / "classes_moved.safetensors")


def pooled_top(dets: list[np.ndarray]) -> list[np.ndarray]:
    """Each image's detections scoring above the widest gap among the top scores pooled over all images.

    COCO ranks the detections of all images together, so ground truth made of exactly the pooled top k is found
    at AP50 = 1 whatever the order within it, and a wide gap keeps float noise (which differs between CPUs) from
    moving a detection across the cut. Per-image top k would not do: another image's extra boxes can outrank it.
    """
    scores = np.sort(np.concatenate([d[:, 1] for d in dets]))[::-1]
    last = min(MAX_GT_BOXES, len(scores) - 1)
    gaps = scores[MIN_GT_BOXES - 1:last] - scores[MIN_GT_BOXES:last + 1]
    assert gaps.size and gaps.max() >= MIN_SCORE_GAP, f"no score gap >= {MIN_SCORE_GAP} among the top {last} scores"
    k = MIN_GT_BOXES + int(np.argmax(gaps))  # the number of boxes kept
    cut = (scores[k - 1] + scores[k]) / 2
    return [d[d[:, 1] > cut] for d in dets]


def evaluate_cli(root: Path, weights: Path, out: Path) -> dict:
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={root}", "-o",
                 f"Evaluate.weight_path={weights}", "-o", f"Global.output={out}", "-o", "Global.device=cpu",
                 "-o", "Evaluate.batch_size=3"])
    assert code == 0
    return json.loads((out / "evaluate_result.json").read_text())


def test_evaluate_cli_scores_the_given_weights(tmp_path, sparse_weights):
    """Ground truth = the model's own most confident boxes, so the given weights on the right images score
    AP50 = 1, while other weights (the same boxes under other labels) score 0, and so would images out of order."""
    right, classes_moved = sparse_weights
    root = tmp_path / "ds"
    paths = make_images(root)
    predictor = create_model("PP-YOLOE_plus_SOD-S", model_dir=right, device="cpu")
    top = pooled_top(predictor.detect_batch([cv2.imread(str(p)) for p in paths]))
    assert sum(len(t) > 0 for t in top) >= 2  # ground truth on several images: their order matters
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(VISDRONE_CLASSES)]
    write_gt(root, paths, top, categories)

    report = evaluate_cli(root, right, tmp_path / "out")
    assert report["done_flag"] is True
    assert report["metrics"]["AP50"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "pr_curves.png").is_file()
    assert evaluate_cli(root, classes_moved, tmp_path / "out2")["metrics"]["AP50"] == pytest.approx(0.0)


def test_evaluate_cli_refuses_weights_of_other_classes(tmp_path, weights, capsys):
    root = tmp_path / "ds"
    paths = make_images(root, n=1)
    write_gt(root, paths, [np.array([[0, 1, 10, 10, 40, 40]])], [{"id": 1, "name": "tree"}, {"id": 2, "name": "roof"}])
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={root}", "-o",
                 f"Evaluate.weight_path={weights}", "-o", f"Global.output={tmp_path / 'out'}", "-o", "Global.device=cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "2 categories" in err and "10" in err


def test_evaluate_cli_names_a_missing_dataset(tmp_path, weights, capsys):
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={tmp_path / 'nope'}",
                 "-o", f"Evaluate.weight_path={weights}", "-o", "Global.device=cpu"])
    assert code == 2
    assert "Dataset folder not found" in capsys.readouterr().err


def test_evaluate_cli_names_a_missing_val_json(tmp_path, weights, capsys):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={tmp_path / 'ds'}",
                 "-o", f"Evaluate.weight_path={weights}", "-o", "Global.device=cpu"])
    assert code == 2
    assert "instance_val.json" in capsys.readouterr().err
