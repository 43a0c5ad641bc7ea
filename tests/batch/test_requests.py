"""predict_ray's checks before Ray starts (no Ray needed): inputs listed as predict lists them, globs, refused
inputs and options, the message when Ray is not installed, and the model its actors load."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from batch_synth import StopLoading, record_create_model, write_scenes
from ppyoloe_sod.batch import predict_ray
from ppyoloe_sod.batch.ray_predict import NO_PAGE, request_rows, run_predict_ray
from ppyoloe_sod.config import load_config
from ppyoloe_sod.errors import ConfigError, ImageReadError


def test_rows_are_predicts_inputs_and_names(tmp_path):
    """A folder and a glob: every image once, in predict's order, with predict's distinct save names."""
    write_scenes(tmp_path, {"a/x.png": (8, 8), "b/x.png": (8, 8), "b/y.jpg": (8, 8)})
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    rows = request_rows([str(tmp_path / "a"), str(tmp_path / "b" / "*.png"), str(tmp_path / "b" / "y.jpg")])
    assert [(r["input_path"], r["save_name"], r["page_index"]) for r in rows] == [
        (str(tmp_path / "a" / "x.png"), "x.png", NO_PAGE),
        (str(tmp_path / "b" / "x.png"), "x-2.png", NO_PAGE),
        (str(tmp_path / "b" / "y.jpg"), "y.jpg", NO_PAGE)]


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(ImageReadError, match=r"pattern .*\*\.png.* matches no files"):
        request_rows(str(tmp_path / "*.png"))


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((8, 8, 3), np.uint8), "ray.data.Dataset with an 'image' column"),
    ("clip.mp4", "is a video"),
])
def test_refused_inputs_say_what_to_pass(tmp_path, inputs, message):
    if isinstance(inputs, str):
        (tmp_path / inputs).write_bytes(b"\0" * 16)
        inputs = str(tmp_path / inputs)
    with pytest.raises(ImageReadError, match=message):
        request_rows(inputs)


@pytest.mark.parametrize("option, value, message", [
    ("num_workers", 0, "num_workers must be a positive integer"),
    ("batch_size", True, "batch_size must be a positive integer"),
    ("num_gpus_per_worker", -1, "num_gpus_per_worker must be a number >= 0"),
    ("output_format", "csv", "output_format is 'csv'; use json"),
])
def test_bad_options_before_ray_starts(monkeypatch, option, value, message):
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray is never reached
    with pytest.raises(ConfigError, match=message):
        predict_ray("x.png", **{option: value})


def test_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'ppyoloe-sod\[ray\]'"):
        predict_ray("x.png")


def test_cli_unknown_engine():
    cfg = load_config("configs/PP-YOLOE_plus_SOD-S.yaml", ["Predict.engine=spark", "Predict.input=x.png"])
    with pytest.raises(ConfigError, match="Predict.engine is 'spark'; use local .* or ray"):
        run_predict_ray(cfg)


class ActorlessDataset:
    """A stand-in Ray Dataset whose map_batches only constructs the worker, as each actor does."""

    def map_batches(self, worker, fn_constructor_kwargs, **options):
        worker(**fn_constructor_kwargs)


@pytest.mark.parametrize("run_mode", ["openvino", "onnxruntime", "paddle"])
def test_ray_actors_load_the_model_predict_loads(run_mode, monkeypatch, tmp_path):
    """Predict.engine=ray: each actor calls create_model as Global.mode=predict does (Predict.kernel_option.run_mode
    included: openvino was ignored and onnxruntime ran on use_hpip's own pick)."""
    from ppyoloe_sod.batch import ray_predict
    from ppyoloe_sod.infer.predictor import run_predict

    write_scenes(tmp_path, {"x.png": (8, 8)})
    fake_ray = SimpleNamespace(data=SimpleNamespace(Dataset=ActorlessDataset, ActorPoolStrategy=lambda size: None,
                                                    from_items=lambda rows: ActorlessDataset()))
    monkeypatch.setattr(ray_predict, "ensure_ray", lambda: None)
    monkeypatch.setattr(ray_predict, "import_ray", lambda: fake_ray)
    calls = record_create_model(monkeypatch)
    overrides = [f"Predict.input={tmp_path / 'x.png'}", "Global.device=cpu", "Predict.threshold={1: 0.4}",
                 f"Predict.kernel_option.run_mode={run_mode}", f"Global.output={tmp_path / 'out'}"]
    for engine in ("local", "ray"):
        with pytest.raises(StopLoading):
            run_predict(load_config("configs/PP-YOLOE_plus_SOD-S.yaml", [*overrides, f"Predict.engine={engine}"]))
    assert calls[1] == calls[0]
    assert calls[0]["use_hpip"] is (run_mode != "paddle") and calls[0]["threshold"] == {1: 0.4}
