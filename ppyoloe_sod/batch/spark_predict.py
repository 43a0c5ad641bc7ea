"""Batch inference on Apache Spark, for users whose data and cluster are already Spark's (the optional ``spark``
extra: ``pip install 'ppyoloe-sod[spark]'``, plus Java 17 for Spark 4).

Spark does the scheduling; this module only plugs the Ray path's pieces into it. The driver lists the inputs as
request rows (``ray_predict.request_rows``: predict's order and save names); ``DataFrame.mapInArrow`` runs each
partition through one ``ray_predict.DetectWorker``, so the model is loaded once per partition and each group of
``batch_size`` rows is one call of ``predict``. The result rows have the Ray path's columns (``RESULT_COLUMNS``:
``input_path``, ``page_index``, ``save_name``, ``boxes`` as PaddleX JSON text) and Parquet output.

A bad image fails the job, as on Ray. When this module runs the job (``output`` set), the worker's error of this
package (an ImageReadError naming the file, ...) is raised again in the calling process as that same type.
PySpark is imported only when these functions run.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .. import errors
from ..errors import ConfigError
from ..imageio import DEFAULT_MAX_PIXELS
from ..infer.slicing import SliceConfig, as_slice_config
from .ray_predict import DetectWorker, _positive_int, request_rows

if TYPE_CHECKING:
    import pyarrow
    import pyspark.sql

REQUEST_SCHEMA = "kind string, ref string, input_path string, page_index long, save_name string"
RESULT_SCHEMA = "input_path string, page_index long, save_name string, boxes string"  # ray_predict.RESULT_COLUMNS
# A local Spark that starts in seconds: no web UI, few shuffle partitions, the workers run this interpreter.
LOCAL_CONF = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2",
              "spark.ui.showConsoleProgress": "false"}
JAVA_INSTALL = "install Java 17 (Debian/Ubuntu: apt-get install default-jre-headless) or set JAVA_HOME"


def import_pyspark() -> Any:
    """The ``pyspark.sql`` module, or a ConfigError saying how to install PySpark and Java."""
    try:
        import pyspark.sql
    except ImportError as e:
        raise ConfigError(f"Batch inference on Spark needs PySpark: pip install 'ppyoloe-sod[spark]' (and "
                          f"{JAVA_INSTALL}); importing it failed: {e}") from e
    return pyspark.sql


def java_available() -> bool:
    """Whether a Java runtime for Spark's JVM can be found (JAVA_HOME or ``java`` on the PATH)."""
    home = os.environ.get("JAVA_HOME")
    return bool(home and os.path.exists(os.path.join(home, "bin", "java"))) or shutil.which("java") is not None


def local_spark(master: str = "local[2]", app_name: str = "ppyoloe-sod") -> "pyspark.sql.SparkSession":
    """The active SparkSession, else a new one on ``master`` (``local[2]``: this machine, two cores; or a
    cluster's URL, e.g. ``spark://host:7077``), configured to start fast (``LOCAL_CONF``). On a local master the
    Python workers run this interpreter."""
    sql = import_pyspark()
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        return active
    if not java_available():
        raise ConfigError(f"Spark runs on a JVM and no Java was found: {JAVA_INSTALL}.")
    builder = sql.SparkSession.builder.master(master).appName(app_name)
    conf = dict(LOCAL_CONF)
    if master.startswith("local"):
        conf["spark.pyspark.python"] = conf["spark.pyspark.driver.python"] = sys.executable
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def detect_partition(batches: Iterator["pyarrow.RecordBatch"], predictor: Mapping[str, Any],
                     slice: SliceConfig | None, batch_size: int) -> Iterator["pyarrow.RecordBatch"]:
    """mapInArrow's function: the request rows of one partition in, their result rows out. The model is loaded
    on the partition's first row (an empty partition loads none), then ``batch_size`` rows per predict call."""
    import pyarrow as pa

    schema = pa.schema([("input_path", pa.string()), ("page_index", pa.int64()), ("save_name", pa.string()),
                        ("boxes", pa.string())])
    worker = None
    for batch in batches:
        for start in range(0, batch.num_rows, batch_size):
            rows = batch.slice(start, batch_size)
            worker = worker or DetectWorker(predictor, slice)
            columns = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in rows.schema.names}
            yield pa.RecordBatch.from_pydict(worker(columns), schema=schema)


_OUR_ERROR = re.compile(r"^ppyoloe_sod\.errors\.(\w+): (.*)$", re.MULTILINE)


@contextmanager
def raising_our_errors() -> Iterator[None]:
    """Spark reports a Python worker's exception as its own, with the worker's traceback as text; the last error
    of this package in that text is raised again as its type (ImageReadError, ...) with its message."""
    try:
        yield
    except Exception as e:
        found = _OUR_ERROR.findall(str(e))
        error_type = getattr(errors, found[-1][0], None) if found else None
        if isinstance(error_type, type) and issubclass(error_type, errors.PPYOLOESODError):
            raise error_type(found[-1][1]) from e
        raise


def predict_spark(inputs: Any, model_name: str = "PP-YOLOE_plus_SOD-S", model_dir: str | os.PathLike | None = None,
                  *, spark: "pyspark.sql.SparkSession | None" = None, num_partitions: int | None = None,
                  batch_size: int = 1, device: str = "cpu", output: str | os.PathLike | None = None,
                  threshold: Any = None, slice: SliceConfig | Mapping[str, Any] | None = None,
                  use_hpip: bool = False, hpi_config: Mapping[str, Any] | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> "pyspark.sql.DataFrame":
    """Detect on every image of ``inputs`` with Spark; a DataFrame of result rows.

    ``inputs``: paths, globs, folders and PDFs, or a list of them (as ``predict_ray``; every executor must read
    them). ``spark``: the session to run on (default: the active one, else ``local_spark()``, local[2]).
    ``num_partitions``: how many parts the images are split into (default: the session's parallelism); the
    model is loaded once per part. ``batch_size`` images per forward; ``device`` where each worker runs the
    model ('cpu', or 'gpu:0' on executors with a GPU each). ``model_name``, ``model_dir``, ``threshold``,
    ``use_hpip``, ``hpi_config``, ``max_pixels``: as ``create_model``; ``slice``: as ``predict``.

    Returns the rows ``input_path``, ``page_index`` (null except for PDF pages), ``save_name`` and ``boxes``
    (PaddleX's box list as JSON text), the columns of ``predict_ray``. Lazy without ``output``; with ``output``
    the job runs now, writes Parquet there (the path must not exist yet; every executor must reach it) and the
    written rows are returned.
    """
    batch_size = _positive_int(batch_size, "batch_size", "batch_size")
    if num_partitions is not None:
        num_partitions = _positive_int(num_partitions, "num_partitions", "num_partitions")
    rows = request_rows(inputs)
    spark = spark or local_spark()
    predictor = dict(model_name=model_name, model_dir=None if model_dir is None else os.fspath(model_dir),
                     device=device, threshold=threshold, use_hpip=use_hpip, max_pixels=max_pixels,
                     hpi_config=hpi_config)
    detect = functools.partial(detect_partition, predictor=predictor, slice=as_slice_config(slice),
                               batch_size=batch_size)
    requests = spark.createDataFrame(rows, REQUEST_SCHEMA)
    requests = requests.repartition(num_partitions or spark.sparkContext.defaultParallelism)
    results = requests.mapInArrow(detect, RESULT_SCHEMA)
    if output is None:
        return results
    with raising_our_errors():
        results.write.parquet(os.fspath(output), mode="errorifexists")
    return spark.read.parquet(os.fspath(output))
