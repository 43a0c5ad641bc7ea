"""Batch inference over many images on a Ray cluster (the optional ``ray`` extra: ``pip install 'ppyoloe-sod[ray]'``)
or on Spark (the ``spark`` extra).

Ray and PySpark are imported only when ``predict_ray`` / ``predict_spark`` run, so ``import ppyoloe_sod.batch``
works without them.
"""
from .ray_predict import predict_ray, run_predict_ray
from .spark_predict import predict_spark

__all__ = ["predict_ray", "predict_spark", "run_predict_ray"]
