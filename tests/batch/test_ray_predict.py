"""predict_ray on a local Ray: the same detections and files as predict (plain and sliced), from paths and from
a ray.data.Dataset, Parquet output, the CLI engine, and a worker killed mid-job."""
from __future__ import annotations

import json

import pytest

from batch_synth import DiesOnceWorker, write_scenes

pytestmark = pytest.mark.slow  # Ray and its actors start in tens of seconds on two loaded cores

SCENES = {"a/x.png": (120, 150), "b/x.png": (100, 140), "b/y.png": (90, 90)}
SLICE = {"size": 96, "overlap": 0.2}  # a 150x120 image: 2x2 slices plus the whole image


def local_predict(model_dir, inputs, **kwargs):
    from ppyoloe_sod import create_model

    return list(create_model("PP-YOLOE_plus_SOD-S", model_dir=model_dir, device="cpu").predict(inputs, **kwargs))


def boxes_by_path(rows):
    return {row["input_path"]: json.loads(row["boxes"]) for row in rows}


def test_json_files_are_predicts(local_ray, model_dir, tmp_path):
    """Two actors over a folder: one row per image, and the JSON files predict writes, byte for byte (two
    inputs named x.png: x_res.json and x-2_res.json, as predict names them)."""
    from ppyoloe_sod.batch import predict_ray

    write_scenes(tmp_path / "in", SCENES)
    results = predict_ray(str(tmp_path / "in"), model_dir=model_dir, num_workers=2, output=tmp_path / "ray")
    for res in local_predict(model_dir, str(tmp_path / "in")):
        res.save_to_json(tmp_path / "local")
    local_files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert local_files == ["x-2_res.json", "x_res.json", "y_res.json"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == local_files
    for name in local_files:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    rows = results.take_all()
    assert sorted(r["input_path"] for r in rows) == sorted(str(tmp_path / "in" / n) for n in SCENES)
    assert sum(len(json.loads(r["boxes"])) for r in rows) > 0


def test_sliced_and_dataset_input_match_predict(local_ray, model_dir, tmp_path):
    """A ray.data.Dataset of RGB images (read_images) with a slice config: predict's sliced boxes."""
    from ppyoloe_sod.batch import predict_ray

    paths = write_scenes(tmp_path, {"x.png": SCENES["a/x.png"]})
    dataset = local_ray.data.read_images(str(paths[0]), include_paths=True, mode="RGB")
    rows = predict_ray(dataset, model_dir=model_dir, slice=SLICE).take_all()
    expected = local_predict(model_dir, str(paths[0]), slice=SLICE)[0].boxes
    unsliced = local_predict(model_dir, str(paths[0]))[0].boxes
    assert len(rows) == 1 and rows[0]["save_name"] == "x.png"
    assert json.loads(rows[0]["boxes"]) == expected
    assert expected and expected != unsliced  # the slices were used


def test_killed_worker_every_image_once(local_ray, model_dir, tmp_path, monkeypatch):
    """The actor's process dies on its first batch; Ray restarts it and reruns the batch: every image comes
    out exactly once, with predict's boxes."""
    from ppyoloe_sod.batch import ray_predict

    local_ray.cloudpickle.register_pickle_by_value(__import__("batch_synth"))
    worker = type("DiesOnce", (DiesOnceWorker,), {"marker": str(tmp_path / "died")})
    monkeypatch.setattr(ray_predict, "DetectWorker", worker)
    names = {f"{i}.png": (64, 80) for i in range(4)}
    paths = write_scenes(tmp_path / "in", names)
    rows = ray_predict.predict_ray([str(p) for p in paths], model_dir=model_dir, num_workers=1).take_all()
    assert (tmp_path / "died").exists()
    assert sorted(r["input_path"] for r in rows) == sorted(str(p) for p in paths)
    assert boxes_by_path(rows) == {r.input_path: r.boxes for r in local_predict(model_dir, str(tmp_path / "in"))}


def test_cli_engine_ray_writes_parquet(local_ray, model_dir, tmp_path):
    """-o Predict.engine=ray -o Predict.ray.output_format=parquet: a glob's images, rows as predict's."""
    import pyarrow.parquet as pq

    from ppyoloe_sod import __main__ as cli

    paths = write_scenes(tmp_path / "in", {"p.png": (70, 90), "q.png": (90, 70)})
    rc = cli.main(["-c", "configs/PP-YOLOE_plus_SOD-S.yaml", "-o", "Global.mode=predict",
                   "-o", f"Predict.model_dir={model_dir}", "-o", f"Predict.input={tmp_path / 'in'}/*.png",
                   "-o", "Predict.engine=ray", "-o", "Predict.ray.num_workers=2",
                   "-o", "Predict.ray.output_format=parquet", "-o", f"Global.output={tmp_path / 'out'}"])
    assert rc == 0
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert boxes_by_path(rows) == {r.input_path: r.boxes for r in local_predict(model_dir, [str(p) for p in paths])}
    assert sorted(r["save_name"] for r in rows) == ["p.png", "q.png"]
