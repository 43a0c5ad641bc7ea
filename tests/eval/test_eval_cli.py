"""`-o Global.mode=evaluate` end to end on a generated dataset in PaddleX's COCO layout."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

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


def test_evaluate_cli_scores_the_given_weights(tmp_path, weights):
    """Ground truth = the model's own most confident boxes, so the right weights on the right images score
    AP50 = 1 on them, while any mix-up (other weights, images out of order) would not."""
    root = tmp_path / "ds"
    paths = make_images(root)
    predictor = create_model("PP-YOLOE_plus_SOD-S", model_dir=weights, device="cpu")
    dets = predictor.detect_batch([cv2.imread(str(p)) for p in paths])
    # the 5 best per image (random weights: some reach past the border, which COCO matching does not mind)
    top = [d[np.argsort(-d[:, 1], kind="stable")[:5]] for d in dets]
    assert sum(len(t) for t in top) >= 5
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(VISDRONE_CLASSES)]
    write_gt(root, paths, top, categories)
    out = tmp_path / "out"
    code = main(["-c", CONFIG, "-o", "Global.mode=evaluate", "-o", f"Global.dataset_dir={root}", "-o",
                 f"Evaluate.weight_path={weights}", "-o", f"Global.output={out}", "-o", "Global.device=cpu",
                 "-o", "Evaluate.batch_size=3"])  # the batch used above: random weights give near-tied scores
    assert code == 0
    report = json.loads((out / "evaluate_result.json").read_text())
    assert report["done_flag"] is True
    assert report["metrics"]["AP50"] > 0.9
    assert (out / "pr_curves.png").is_file()


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
