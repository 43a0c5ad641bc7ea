"""Batch inference over many images on a Ray cluster (the optional ``ray`` extra: ``pip install 'ppyoloe-sod[ray]'``).

Ray is imported only when ``predict_ray`` runs, so ``import ppyoloe_sod.batch`` works without it.
"""
from .ray_predict import predict_ray, run_predict_ray

__all__ = ["predict_ray", "run_predict_ray"]
