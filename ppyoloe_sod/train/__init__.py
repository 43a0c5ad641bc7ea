"""Training, read top to bottom:

- ``launch.py``: :func:`train` (Python) and :func:`run_train` (``Global.mode=train``, ``python -m ppyoloe_sod.train``)
  check the options (``config.TrainConfig``) and start the processes: one, one per listed GPU, or a torchrun rank.
- ``runner.py``: one process's run: data, model, start weights, the epochs, evaluation, checkpoints, logs.
- ``engine.py``: one optimisation step (forward, loss, backward, AMP, SGD, EMA).
- ``checkpoint.py``: the files a run writes (resumable checkpoints, model folders).
- ``losses.py``, ``assigner.py``, ``optim.py``: the recipe's loss, label assignment, SGD, schedule and EMA.
- ``detect.py``: evaluation during training through the predictor's own batch step.
"""
from .launch import run_train, train

__all__ = ["run_train", "train"]
