"""Batch inference on Spark: examples/spark_predict.py on a local Spark writes predict's detections as Parquet
rows (the Ray path's columns), a bad image fails the job with its ImageReadError, and each partition loads the
model once (checked on the partition function itself, without Spark)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from batch_synth import write_scenes
from ppyoloe_sod.batch.ray_predict import NO_PAGE, RESULT_COLUMNS, request_rows
from ppyoloe_sod.errors import ImageReadError

ROOT = Path(__file__).resolve().parents[2]
SCENES = {"a/x.png": (120, 150), "b/x.png": (100, 140), "b/y.png": (90, 90)}


def local_predict(model_dir, inputs):
    from ppyoloe_sod import create_model

    return list(create_model("PP-YOLOE_plus_SOD-S", model_dir=model_dir, device="cpu").predict(inputs))


def spark_example():
    """examples/spark_predict.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("spark_predict_example", ROOT / "examples" / "spark_predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # the JVM, then the model in each of two Python workers, on two loaded cores
def test_example_writes_predicts_detections_as_parquet(local_spark_session, model_dir, tmp_path, capsys):
    """Two partitions, batches of two: one row per image with predict's boxes and save names (the second x.png
    is x-2.png, as predict names it), in the Ray path's columns."""
    import pyarrow.parquet as pq

    write_scenes(tmp_path / "in", SCENES)
    out = tmp_path / "results.parquet"
    rc = spark_example().main([str(tmp_path / "in"), "--output", str(out), "--model-dir", str(model_dir),
                               "--batch-size", "2", "--partitions", "2"])
    assert rc == 0 and "3 result(s) written to" in capsys.readouterr().out
    table = pq.read_table(out)
    assert tuple(table.column_names) == RESULT_COLUMNS
    rows = table.to_pylist()
    expected = local_predict(model_dir, str(tmp_path / "in"))
    assert {r["input_path"]: json.loads(r["boxes"]) for r in rows} == {e.input_path: e.boxes for e in expected}
    assert {r["input_path"]: r["save_name"] for r in rows} == {e.input_path: e.save_name for e in expected}
    assert {r["page_index"] for r in rows} == {None}
    assert sum(len(e.boxes) for e in expected) > 0


@pytest.mark.slow
def test_a_bad_image_fails_the_job_naming_it(local_spark_session, model_dir, tmp_path):
    """As on Ray, an image that does not decode stops the job; its ImageReadError reaches the caller."""
    from ppyoloe_sod.batch import predict_spark

    write_scenes(tmp_path / "in", {"good.png": (60, 80)})
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"Cannot decode '.*broken\.png' as an image"):
        predict_spark(str(tmp_path / "in"), model_dir=model_dir, spark=local_spark_session,
                      output=tmp_path / "out")


def test_a_partition_loads_the_model_once(model_dir, tmp_path, monkeypatch):
    """detect_partition (mapInArrow's function) over two Arrow batches of a partition: one create_model, and
    predict's boxes for every row, batch_size rows per call."""
    import pyarrow as pa

    from ppyoloe_sod.batch.spark_predict import detect_partition
    from ppyoloe_sod.infer import predictor

    paths = write_scenes(tmp_path, {f"{i}.png": (64, 80) for i in range(5)})
    rows = request_rows([str(p) for p in paths])
    assert {r["page_index"] for r in rows} == {NO_PAGE}
    batches = [pa.RecordBatch.from_pylist(rows[:3]), pa.RecordBatch.from_pylist(rows[3:])]
    loads = []
    real_create_model = predictor.create_model
    monkeypatch.setattr(predictor, "create_model", lambda **kw: loads.append(kw) or real_create_model(**kw))
    args = dict(model_name="PP-YOLOE_plus_SOD-S", model_dir=str(model_dir), device="cpu")
    out = list(detect_partition(iter(batches), args, None, batch_size=2))
    assert len(loads) == 1 and [b.num_rows for b in out] == [2, 1, 2]
    got = {r["input_path"]: json.loads(r["boxes"]) for b in out for r in b.to_pylist()}
    assert got == {e.input_path: e.boxes for e in local_predict(model_dir, [str(p) for p in paths])}


def test_an_empty_partition_loads_no_model(monkeypatch):
    from ppyoloe_sod.batch.spark_predict import detect_partition
    from ppyoloe_sod.infer import predictor

    monkeypatch.setattr(predictor, "create_model", lambda **kw: pytest.fail("a model was loaded"))
    assert list(detect_partition(iter([]), {"model_name": "PP-YOLOE_plus_SOD-S"}, None, batch_size=2)) == []
