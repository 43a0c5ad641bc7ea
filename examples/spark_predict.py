"""Detect small objects on many images with Apache Spark and write the results as Parquet.

    pip install -e '.[spark]'                 # and Java 17: apt-get install default-jre-headless
    python examples/spark_predict.py images/ 'more/**/*.jpg' --output results.parquet \
        [--master local[2]] [--model PP-YOLOE_plus_SOD-S] [--model-dir DIR] [--batch-size 8] [--partitions 4]

Rows: input_path, page_index (PDF pages), save_name, boxes (PaddleX's box list as JSON text), the rows of the
Ray path. Each Spark partition loads the model once (``ppyoloe_sod.batch.spark_predict``). ``--master`` is a
cluster's URL (``spark://host:7077``, ``yarn``) to run there; inputs and output must then be paths every
executor reaches, with this package installed on each.
"""
from __future__ import annotations

import argparse
import sys

from ppyoloe_sod.batch.spark_predict import local_spark, predict_spark
from ppyoloe_sod.errors import PPYOLOESODError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders, globs or PDFs")
    parser.add_argument("--output", required=True, help="Parquet folder to write (must not exist)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: local[2], this machine)")
    parser.add_argument("--model", default="PP-YOLOE_plus_SOD-S", help="model name (default: %(default)s)")
    parser.add_argument("--model-dir", help="weights file or folder, or an export folder (default: the "
                                            "published weights)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward (default: 1)")
    parser.add_argument("--partitions", type=int, help="parts the images are split into; one model load each "
                                                       "(default: Spark's parallelism)")
    parser.add_argument("--device", default="cpu", help="device of each Spark worker (default: cpu)")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the model's, 0.5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spark = local_spark(args.master)
        results = predict_spark(args.inputs, args.model, args.model_dir, spark=spark, num_partitions=args.partitions,
                                batch_size=args.batch_size, device=args.device, threshold=args.threshold,
                                output=args.output)
        print(f"{results.count()} result(s) written to {args.output} (Parquet: input_path, page_index, save_name, "
              f"boxes)")
    except PPYOLOESODError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
