"""End-to-end parity with PaddleX 3.7.2: the same random-weight model, the same images, the same boxes.

A ppdet SOD-S model with random weights is exported to a PaddleX model folder (inference.json / .pdiparams /
inference.yml, as PaddleDetection exports it) and its weights saved as a ``.pdparams`` file. PaddleX's
``create_model(...).predict`` runs in its own virtual environment (paddlepaddle 3.3.1 and paddlex 3.7.2 pin
packages that clash with ours), driven through a subprocess; ours runs on the converted
``.pdparams``. Both predict the same synthetic street scenes of several sizes and aspect ratios with a float
threshold and with a per-class dict threshold. Each side's NMS output (before threshold and clipping) is recorded
and matched box for box (tests/parity_match.py: same class, score within SCORE_TOL, corners within COORD_TOL);
only boxes whose fate float noise could flip (score next to the threshold, overlap next to the NMS IoU, overlapping
near-tied scores, and the boxes those decide) may be missing on one side, and they must stay a small share. Each
JSON document must be exactly its own NMS output thresholded and clipped as ours does it, in NMS order, with the
same keys, input path, page index and label names.

scripts/test.sh builds that venv as ``~/.cache/ppyoloe_sod/venv-paddlex-<sha256[:12] of its requirement list>``
and exports ``PPYOLOE_SOD_PADDLEX_PYTHON`` (its python). Run directly under pytest, the test uses that variable
if set, else the newest such venv in the cache, else skips saying how to build one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "infer"))
from infer_synth import scene  # noqa: E402
from parity_match import match_detections  # noqa: E402

from ppyoloe_sod.infer.predictor import filter_and_clip  # noqa: E402

MODEL = "PP-YOLOE_plus_SOD-S"
SIZES = [(360, 480), (500, 300), (640, 640), (180, 960), (1080, 1920)]  # (h, w): several aspect ratios
THRESHOLDS = [0.5, {0: 0.2, 1: 0.9, 2: 0.25, 3: 0.6, 4: 0.35, 5: 0.8, 6: 0.3, 7: 0.45, 8: 0.7}]  # 9: 0.5
# Measured ours against PaddleX on these scenes: scores 7.5e-6, corners 2.7e-4 px (float32 noise); 4x and 7x margin.
SCORE_TOL, COORD_TOL = 3e-5, 2e-3
# How close to an edge (threshold, NMS IoU, a tied score) a box is left undecided: over 10x the noise above.
SCORE_MARGIN, IOU_MARGIN = 1e-4, 5e-3
MAX_UNDECIDED_SHARE = 0.05  # more would let the comparison pass on a few boxes

DRIVER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from paddlex import create_model
    from paddlex.inference.models.object_detection import processors
    raw = []  # each image's NMS output (class, score, x1, y1, x2, y2), before threshold and clipping
    apply = processors.DetPostProcess.apply
    def recording_apply(self, boxes, *a, **k):
        raw.append(np.asarray(boxes, np.float32).reshape(-1, 6).tolist())
        return apply(self, boxes, *a, **k)
    processors.DetPostProcess.apply = recording_apply
    args = json.loads(open(sys.argv[1]).read())
    model = create_model(model_name=args["model_name"], model_dir=args["model_dir"], device="cpu",
                         engine_config={"run_mode": "paddle"})
    out = []
    for i, thr in enumerate(args["thresholds"]):
        if isinstance(thr, dict):
            thr = {int(k): v for k, v in thr.items()}
        docs = []
        for res in model.predict(args["images"], batch_size=args["batch_size"], threshold=thr):
            res.save_to_json(f"{args['out_dir']}/{i}")
            docs.append(res.json["res"])
        out.append({"docs": docs, "raw": raw[:]})
        raw.clear()
    json.dump(out, open(args["result"], "w"))
""")


PADDLEX_VENV_CACHE = Path.home() / ".cache" / "ppyoloe_sod"  # where scripts/test.sh builds venv-paddlex-<hash>


def paddlex_python() -> str:
    """PaddleX's python: PPYOLOE_SOD_PADDLEX_PYTHON (a wrong path fails), else the newest venv scripts/test.sh
    built (a changed requirement list gets a new hash, so the newest is the current one), else a skip."""
    named = os.environ.get("PPYOLOE_SOD_PADDLEX_PYTHON")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"PPYOLOE_SOD_PADDLEX_PYTHON={named} is not a file: point it at the PaddleX venv's python "
                        "or unset it (scripts/test.sh builds the venv and sets it)")
        return named
    built = sorted(PADDLEX_VENV_CACHE.glob("venv-paddlex-*/bin/python"),
                   key=lambda python: python.lstat().st_mtime)  # the link venv (re)creates
    if not built:
        pytest.skip(f"no PaddleX venv in {PADDLEX_VENV_CACHE}: run this test through scripts/test.sh (it builds "
                    "venv-paddlex-<hash> there with paddlepaddle 3.3.1 and paddlex 3.7.2) or set "
                    "PPYOLOE_SOD_PADDLEX_PYTHON to a python that has them")
    return str(built[-1])


def calibrated_paddle_state(model) -> dict[str, np.ndarray]:
    """The ppdet model's weights with BN statistics measured on synthetic scenes.

    With ppdet's random init (random BN statistics that do not match the activations) the output barely
    depends on the image, so a colour-order or resize bug would go unseen. Measuring the statistics (in torch,
    through our converter both ways) makes the boxes follow the picture."""
    import torch
    from infer_synth import _as_batch

    from ppyoloe_sod.models import build_model
    from ppyoloe_sod.weights.convert import paddle_to_torch, torch_to_paddle

    pd_state = {k: v.numpy() for k, v in model.state_dict().items()}
    net = build_model(MODEL).eval()
    net.load_state_dict(paddle_to_torch(pd_state, MODEL).state_dict)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for m in net.modules():  # BN in training mode (batch statistics), dropout off: deterministic weights
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()
        net(_as_batch([scene(640, 640, seed=200 + k) for k in range(2)]))
    calibrated = torch_to_paddle(net.state_dict())
    assert set(calibrated) == set(pd_state)
    return calibrated


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(PaddleX model folder, .pdparams of the same weights, image paths)."""
    paddlex_python()  # fail or skip before the export when PaddleX is missing
    from .ppdet_reference import build, export_inference  # imports paddle + ppdet

    from ppyoloe_sod.weights.pdparams import save_pdparams
    from ppyoloe_sod.zoo import get_spec

    tmp = tmp_path_factory.mktemp("paddlex")
    spec = get_spec(MODEL)
    model = build(MODEL, eval_size=spec.input_size, seed=3, cls_bias=-1.2, head_scale=0.4)
    state = calibrated_paddle_state(model)
    model.set_state_dict(state)
    save_pdparams(state, tmp / "random.pdparams")  # before export fuses the RepVGG branches
    export_inference(model, tmp / "px_model", MODEL, spec.input_size, list(spec.classes))
    images = []
    for i, (h, w) in enumerate(SIZES):
        path = tmp / "images" / f"scene_{i}_{w}x{h}.jpg"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), scene(h, w, seed=40 + i))
        images.append(str(path))
    return tmp / "px_model", tmp / "random.pdparams", images


def run_paddlex(model_dir: Path, images: list[str], tmp: Path) -> list[dict]:
    """Per threshold: {"docs": each image's result document, "raw": each image's NMS rows}."""
    (tmp / "driver.py").write_text(DRIVER)
    args = {"model_name": MODEL, "model_dir": str(model_dir), "images": images, "batch_size": 2,
            "thresholds": [t if not isinstance(t, dict) else {str(k): v for k, v in t.items()} for t in THRESHOLDS],
            "out_dir": str(tmp / "px_json"), "result": str(tmp / "px_result.json")}
    (tmp / "args.json").write_text(json.dumps(args))
    env = {**os.environ, "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True", "PYTHONPATH": ""}
    proc = subprocess.run([paddlex_python(), str(tmp / "driver.py"), str(tmp / "args.json")], capture_output=True,
                          text=True, env=env, cwd=tmp, timeout=900)
    assert proc.returncode == 0, f"PaddleX failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads((tmp / "px_result.json").read_text())


def check_doc(doc: dict, raw: np.ndarray, threshold, size: tuple[int, int], labels: tuple[str, ...],
              where: str) -> None:
    """A result document is exactly its NMS rows thresholded and clipped (as ours does it), in NMS order."""
    assert list(doc) == ["input_path", "page_index", "boxes"], where
    for box in doc["boxes"]:
        assert list(box) == ["cls_id", "label", "score", "coordinate"], f"{where}: {box}"
        assert box["label"] == labels[box["cls_id"]], f"{where}: {box}"
    order = [(b["cls_id"], -b["score"]) for b in doc["boxes"]]
    assert order == sorted(order), f"{where}: not in NMS order (class ascending, score descending)"
    h, w = size
    assert doc["boxes"] == filter_and_clip(raw, threshold, w, h, labels), f"{where}: not its NMS rows filtered"


def compare_docs(theirs: dict, ours: dict, theirs_raw: np.ndarray, ours_raw: np.ndarray, threshold,
                 size: tuple[int, int], labels: tuple[str, ...], where: str) -> dict:
    """PaddleX's document and NMS rows against ours; returns match_detections' counts and worst differences.

    The boxes are matched on the NMS rows, not in the documents: clipping changes the IoUs NMS decided on."""
    assert ours["input_path"] == theirs["input_path"] and ours["page_index"] == theirs["page_index"], where
    check_doc(theirs, theirs_raw, threshold, size, labels, where + " (PaddleX)")
    check_doc(ours, ours_raw, threshold, size, labels, where + " (ours)")
    return match_detections(theirs_raw, ours_raw, SCORE_TOL, COORD_TOL, floor=threshold,
                            score_margin=SCORE_MARGIN, iou_margin=IOU_MARGIN)


@pytest.mark.oracle
@pytest.mark.slow
def test_predictions_match_paddlex(exported, tmp_path):
    from ppyoloe_sod.infer.predictor import create_model

    model_dir, pdparams, images = exported
    theirs = run_paddlex(model_dir, images, tmp_path)

    ours_model = create_model(MODEL, model_dir=str(pdparams), device="cpu")
    ours_raw = []  # each image's NMS rows, recorded as predict makes them
    detect_batch = ours_model.detect_batch
    ours_model.detect_batch = lambda batch: ours_raw.extend(found := detect_batch(batch)) or found
    labels = ours_model.labels
    total = undecided = rows = 0
    worst = {"score": 0.0, "box": 0.0}
    for i, thr in enumerate(THRESHOLDS):
        ours_raw.clear()
        ours = [r for r in ours_model.predict(images, batch_size=2, threshold=thr)]
        docs, theirs_raw = theirs[i]["docs"], theirs[i]["raw"]
        assert len(ours) == len(docs) == len(theirs_raw) == len(ours_raw) == len(images)
        for res, doc, t_raw, o_raw, img, size in zip(ours, docs, theirs_raw, ours_raw, images, SIZES):
            where = f"{Path(img).name} threshold={thr}"
            stats = compare_docs(doc, res.json["res"], np.asarray(t_raw, np.float32), o_raw, thr, size, labels, where)
            total += len(doc["boxes"])
            undecided, rows = undecided + stats["undecided"], rows + stats["rows"]
            worst = {k: max(worst[k], stats[k]) for k in worst}
            print(f"{where}: {len(doc['boxes'])} boxes, {stats['decided']} decided, {stats['undecided']} undecided "
                  f"of {stats['rows']} rows, max |d score| {stats['score']:.2e}, max |d coord| {stats['box']:.2e} px")
            # The files both sides saved hold the same documents.
            saved = json.loads((tmp_path / "px_json" / str(i) / f"{Path(img).stem}_res.json").read_text())
            assert saved == doc
            ours_saved = json.loads(res.save_to_json(tmp_path / "ours" / str(i)).read_text())
            assert ours_saved == json.loads(json.dumps(res.json["res"])), where
    print(f"all: {total} boxes, {undecided} undecided of {rows} rows, worst {worst}")
    assert undecided <= MAX_UNDECIDED_SHARE * rows, f"{undecided} of {rows} rows undecided: the test checks too little"
    assert total > 20  # enough boxes for the comparison to mean something
    counts = [len(doc["boxes"]) for doc in theirs[0]["docs"]]
    assert len(set(counts)) > 2, f"the boxes hardly depend on the image ({counts}): the test would miss input bugs"
