"""Our request and response models against PaddleX 3.7.2's own pydantic models for small_object_detection.

``paddlex_schemas.json`` holds the JSON schemas PaddleX's models generate (dumped with ``DUMP`` below from the
paddlex 3.7.2 wheel's ``inference/serving/schemas/small_object_detection.py`` and ``infra/models.py``). Ours must
generate the same. With PaddleX's virtual environment at hand (the Paddle oracle; ``PPYOLOE_SOD_PADDLEX_PYTHON``
or ``~/.cache/ppyoloe_sod/venv-paddlex*``), the oracle test imports PaddleX's models there, next to ours, and
compares schemas and how both parse the same bodies, under PaddleX's own pydantic.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest

from ppyoloe_sod.serve import schemas

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "paddlex_schemas.json"

# name -> the attribute path of the model in PaddleX's modules and in ours
MODELS = {
    "InferRequest": ("sod.InferRequest", "InferRequest"),
    "DetectedObject": ("sod.DetectedObject", "DetectedObject"),
    "InferResult": ("sod.InferResult", "InferResult"),
    "AIStudioNoResultResponse": ("infra.AIStudioNoResultResponse", "AIStudioNoResultResponse"),
    "InferResponse": ("infra.AIStudioResultResponse[sod.InferResult]", "InferResponse"),
}

# Run by PaddleX's python: PaddleX's schemas (and, given our schemas.py, ours and how both parse BODIES).
DUMP = r"""
import importlib.util, json, os, sys, types
try:
    import paddlex.inference.serving
except Exception:  # its __init__ insists on the serving extra (FastAPI, aiohttp...), which the models do not need
    import paddlex.inference
    serving = types.ModuleType("paddlex.inference.serving")
    serving.__path__ = [os.path.join(os.path.dirname(paddlex.inference.__file__), "serving")]
    sys.modules["paddlex.inference.serving"] = serving
from paddlex.inference.serving.infra import models as infra
from paddlex.inference.serving.schemas import small_object_detection as sod
models, bodies, ours_path = json.loads(sys.argv[1])
def schemas(resolve):
    return {name: {mode: resolve(name).model_json_schema(mode=mode) for mode in ("validation", "serialization")}
            for name in models}
out = {"endpoint": sod.INFER_ENDPOINT, "paddlex": schemas(lambda name: eval(models[name][0]))}
if ours_path:
    spec = importlib.util.spec_from_file_location("ours_schemas", ours_path)
    ours = importlib.util.module_from_spec(spec)
    sys.modules["ours_schemas"] = ours
    spec.loader.exec_module(ours)
    out["ours"] = schemas(lambda name: getattr(ours, models[name][1]))
    def parse(model, body):
        try:
            return model.model_validate(body).model_dump()
        except Exception as e:
            return [(err["type"], err["loc"]) for err in e.errors()]
    out["parsed"] = [[parse(sod.InferRequest, b), parse(ours.InferRequest, b)] for b in bodies]
print(json.dumps(out))
"""

BODIES = [
    {"image": "aGk="}, {"image": "aGk=", "threshold": 0.4, "visualize": False},
    {"image": "aGk=", "threshold": {"0": 0.3, "7": 0.6}}, {"image": "aGk=", "threshold": "0.5"},
    {"image": "aGk=", "threshold": {"car": 0.3}}, {"image": "aGk=", "visualize": "yes"}, {"image": 5}, {},
    {"image": "aGk=", "logId": "x", "extra": 1},
]


def ours() -> dict:
    return {name: {mode: getattr(schemas, attr).model_json_schema(mode=mode)
                   for mode in ("validation", "serialization")} for name, (_, attr) in MODELS.items()}


def test_our_models_generate_paddlex_s_json_schemas() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert golden["endpoint"] == schemas.INFER_ENDPOINT == "/small-object-detection"
    assert ours() == golden["paddlex"]


def test_the_app_declares_paddlex_s_operations(echo_predictor) -> None:
    from ppyoloe_sod.serve.app import create_app

    paths = create_app(echo_predictor).openapi()["paths"]
    assert paths["/health"]["get"]["operationId"] == "checkHealth"
    infer = paths["/small-object-detection"]["post"]
    assert infer["operationId"] == "infer" and set(infer["responses"]) == {"200", "422", "500"}


def paddlex_python() -> str | None:
    candidates = [os.environ.get("PPYOLOE_SOD_PADDLEX_PYTHON", ""), str(ROOT / ".venv-paddlex" / "bin" / "python"),
                  *sorted(glob.glob(os.path.expanduser("~/.cache/ppyoloe_sod/venv-paddlex*/bin/python")))]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.mark.oracle
def test_paddlex_s_own_models_match_ours_under_its_pydantic() -> None:
    python = paddlex_python()
    if python is None:
        pytest.skip("PaddleX's virtual environment is missing (scripts/test.sh creates it; or set "
                    "PPYOLOE_SOD_PADDLEX_PYTHON to its python)")
    args = json.dumps([MODELS, BODIES, str(Path(schemas.__file__))])
    proc = subprocess.run([python, "-c", DUMP, args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["endpoint"] == schemas.INFER_ENDPOINT
    assert out["ours"] == out["paddlex"]
    for body, (theirs, mine) in zip(BODIES, out["parsed"]):
        assert theirs == mine, body
