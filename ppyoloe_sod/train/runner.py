"""The epoch runner: one process's training run, from the dataset folder to saved models.

:class:`Runner` reads the dataset, builds the model (the dataset's classes; the start weights by the reference's
partial match) and the :class:`~.engine.Trainer`, then runs the epochs: a step per batch, the losses logged
every ``log_interval`` iterations, and at the end of each epoch the evaluation of the EMA weights on
``instance_val.json`` (every ``eval_interval`` epochs and after the last), ``best_model/`` when the mAP improves
(EMA weights, as the reference saves), ``train_curves.png``, and a checkpoint.

A checkpoint is written at the end of every epoch and every ``save_interval_iters`` iterations within one:
``checkpoints/iter_<iteration>.pt`` (the newest ``keep_checkpoints`` are kept), the same file as
``latest/checkpoint.pt`` beside the EMA weights in ``latest/``, and ``train_result.json``. It holds everything the
rest of the run depends on (weights, EMA, optimiser, AMP scaler, iteration, epoch and batch within it, every RNG,
the losses so far), so a run killed at any point and resumed from its last checkpoint ends bit-identical to one
never interrupted (on the CPU; on a GPU as far as its kernels are deterministic). A full disk stops the run with
a DiskFullError naming the file; the previous checkpoint is kept. ``launch.py`` starts one Runner per process.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..config import Config, TrainConfig, dump_config
from ..data.coco import read_coco
from ..data.layout import IMAGES_DIR, annotation_path, find_dataset_root
from ..data.loader import build_train_loader
from ..errors import ConfigError, DiskFullError, NonFiniteLossError, PPYOLOESODError, WeightsError, hint
from ..eval.plots import plot_training_curves
from ..fileio import atomic_write_json, atomic_write_text
from ..models import LoadReport, build_model, is_model_name, load_weights, weights_file
from ..nn.detector import Detector
from ..zoo import ModelSpec, get_spec
from .checkpoint import (CHECKPOINT_NAME, WEIGHTS_NAME, load_checkpoint, rng_state, save_model_dir, set_rng_state,
                         write_checkpoint)
from .engine import LOSS_TERMS, Trainer

STARVED_STEPS = 20  # consecutive steps with ground truth but no positive anchor before a warning
CURVES_NAME = "train_curves.png"
NO_PRETRAIN = ("random", "scratch", "none")  # Train.pretrain_weight_path values for random initialisation
log = logging.getLogger("ppyoloe_sod.train")


@dataclass
class TrainRun:
    """What one process ends with: the summary written to train_result.json and the trained state."""

    summary: dict[str, Any]
    trainer: Trainer | None = None
    spec: ModelSpec | None = None


@dataclass
class _Progress:
    """Speed and ETA over the steps of this process (the first step is excluded: warm-up of kernels)."""

    total_iters: int
    images_per_step: int
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    first_step_end: float | None = None

    def tick(self) -> None:
        self.steps += 1
        if self.first_step_end is None:
            self.first_step_end = time.perf_counter()

    def images_per_s(self) -> float:
        if self.first_step_end is None or self.steps < 2:
            return 0.0
        return (self.steps - 1) * self.images_per_step / max(time.perf_counter() - self.first_step_end, 1e-9)

    def eta(self, iteration: int) -> str:
        ips = self.images_per_s()
        if ips <= 0:
            return "?"
        return _hms((self.total_iters - iteration) * self.images_per_step / ips)


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


def setup_logging(out: Path, rank: int) -> list[logging.Handler]:
    """train.log (appended to on resume) and the console; other ranks only print warnings."""
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("[%(asctime)s] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    console = _TqdmHandler(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers.append(console)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        # An append-only stream: a crash can cut its last line but never loses the lines before it.
        file = logging.FileHandler(out / "train.log", encoding="utf-8")
        file.setFormatter(fmt)
        handlers.append(file)
    for h in handlers:
        log.addHandler(h)
    return handlers


def _resolve_spec(base: ModelSpec, num_classes: int | None, class_names: list[str]) -> ModelSpec:
    """The spec trained here: ``base`` with the dataset's classes (``Train.num_classes`` must agree)."""
    if num_classes is not None and num_classes != len(class_names):
        raise ConfigError(f"Train.num_classes is {num_classes}, but the training annotations list "
                          f"{len(class_names)} categories ({', '.join(class_names[:12])}"
                          f"{', ...' if len(class_names) > 12 else ''}); set -o Train.num_classes="
                          f"{len(class_names)} or fix the json's 'categories'")
    return base.with_classes(class_names)


def pretrain_source(train: TrainConfig, base: ModelSpec) -> str | None:
    """What ``Train.pretrain_weight_path`` starts from; None: random initialisation.

    Unset: the published weights of the model (PaddleX's rule), or random for a model without any (a custom
    spec built in Python); ``random`` (or ``scratch``, ``none``): random.
    """
    source = train.pretrain_weight_path
    if source is None or not source.strip():
        return base.name if is_model_name(base.name) else None
    return None if source.strip().lower() in NO_PRETRAIN else source


def load_pretrained(net: Detector, source: str) -> LoadReport:
    """``Train.pretrain_weight_path`` into ``net`` by the reference's partial match (``models.load_weights``).

    When the published weights cannot be fetched (offline), the error also names the other starting points.
    """
    try:
        path = weights_file(source, net.spec)
    except WeightsError as e:
        if not is_model_name(source):
            raise
        raise WeightsError(f"{e} Or start from a local file with " + hint(
            python="TrainConfig(pretrain_weight_path='FILE.pdparams') (a .pdparams or .safetensors file), or "
                   "from random initialisation with pretrain_weight_path='random'.",
            cli="-o Train.pretrain_weight_path=FILE.pdparams (a .pdparams or .safetensors file), or from "
                "random initialisation with -o Train.pretrain_weight_path=random.")) from e
    return load_weights(net, path, strict=False)


def spec_of(name: str) -> ModelSpec:
    try:
        return get_spec(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


class Runner:
    """One process's training run, split into steps small enough to read."""

    def __init__(self, cfg: Config, base: ModelSpec, progress: bool, rank: int, world: int, device: torch.device,
                 out: Path):
        self.cfg, self.opts, self.base, self.progress = cfg, cfg.Train, base, progress
        self.rank, self.world, self.device, self.out = rank, world, device, out
        self.main = rank == 0
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.epoch_done = 0
        self.iteration = 0
        self.history: list[list[float]] = []  # [iteration, loss, loss_cls, loss_iou, loss_dfl, lr] per step
        self.eval_history: list[dict[str, Any]] = []  # metrics per evaluation, with the epoch
        self.starved = 0  # consecutive steps whose ground truth got no positive anchor
        self.last_checkpoint: tuple[str | Path, int] | None = None  # (file, iteration) of the newest checkpoint

    # ------------------------------------------------------------------ setup
    def _data(self) -> None:
        root = find_dataset_root(self.cfg.Global.dataset_dir)
        self.image_dir = root / IMAGES_DIR
        self.train_data = read_coco(annotation_path(root, "train"), self.image_dir)
        self.val_json: Path | None = annotation_path(root, "val")
        if not self.val_json.is_file():
            log.warning("%s not found: training runs without evaluation, best_model/ is the last epoch",
                        self.val_json)
            self.val_json = None

    def _model(self) -> Detector:
        opts = self.opts
        base = self.base
        self.spec = _resolve_spec(base, opts.num_classes, self.train_data.class_names)
        torch.manual_seed(opts.seed)
        np.random.seed(opts.seed % 2**32)
        net = build_model(self.spec)
        if self.spec is not base:
            log.info("%d classes in the dataset (%s): yolo_head.pred_cls rebuilt for them (%s has %d)",
                     self.spec.num_classes, ", ".join(self.spec.classes[:10]), base.name, base.num_classes)
        if opts.resume_path:
            return net
        source = pretrain_source(opts, base)
        if source is not None:
            log.info("%s", load_pretrained(net, source).summary())
        elif opts.pretrain_weight_path is None:
            log.info("%s has no published weights: starting from random initialisation", base.name)
        else:
            log.info("Train.pretrain_weight_path=%s: starting from random initialisation", opts.pretrain_weight_path)
        return net

    def _build(self) -> None:
        opts = self.opts
        self._data()
        net = self._model()
        self.sizes = list(opts.train_sizes or self.spec.train_sizes or (self.spec.input_size[0],))
        self.loader = build_train_loader(self.train_data.records, self.sizes, opts.batch_size, seed=opts.seed,
                                         workers=opts.num_workers, epoch=0, rank=self.rank,
                                         world_size=self.world, pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = len(self.loader)
        base_lr = float(opts.learning_rate if opts.learning_rate is not None else self.spec.base_lr)
        if self.world > 1 and self.device.type != "cuda":
            log.info("SyncBatchNorm needs CUDA: %d CPU processes use per-process BatchNorm", self.world)
        self.trainer = Trainer.build(net, base_lr, self.iters_per_epoch, self.device, opts.warmup_steps,
                                     max(opts.cosine_epochs, opts.epochs_iters), opts.amp, opts.channels_last,
                                     world_size=self.world)
        self.total_iters = opts.epochs_iters * self.iters_per_epoch
        if opts.max_iters is not None:
            self.total_iters = min(self.total_iters, opts.max_iters)
        self.eval_net: Detector | None = None
        if self.main and self.val_json is not None:
            with torch.random.fork_rng(devices=[]):  # building must not move the RNG (exact resume)
                self.eval_net = build_model(self.spec).to(self.device).eval()
        amp = self.trainer.amp_dtype
        log.info("%s on %s x%d: %d train images, %d iterations/epoch, batch %d/process, lr %.4g, warmup %d "
                 "iterations, cosine over %d epochs, AMP %s, sizes %s, evaluation at %d", self.spec.name,
                 self.device, self.world, len(self.train_data), self.iters_per_epoch, opts.batch_size, base_lr,
                 max(self.trainer.schedule.warmup_iters, 1), max(opts.cosine_epochs, opts.epochs_iters),
                 str(amp).replace("torch.", "") if amp else "off", self.sizes,
                 opts.eval_size or self.spec.input_size[0])

    def _resume(self) -> tuple[int, int]:
        """Restore a checkpoint when ``resume_path`` is set; returns where to go on: (epoch, batch within it)."""
        if not self.opts.resume_path:
            return 0, 0
        state = load_checkpoint(self.opts.resume_path)
        meta = state.get("spec", {})
        if meta.get("num_classes") != self.spec.num_classes or meta.get("model_name") != self.spec.name:
            raise ConfigError(f"{state['path']} was written for {meta.get('model_name')} with "
                              f"{meta.get('num_classes')} classes, this run trains {self.spec.name} with "
                              f"{self.spec.num_classes}; resume with the same model and dataset")
        if state.get("iters_per_epoch") != self.iters_per_epoch:
            log.warning("the checkpoint had %s iterations per epoch, this run has %d (dataset, batch size or "
                        "process count changed): the LR schedule is recomputed for the new count",
                        state.get("iters_per_epoch"), self.iters_per_epoch)
        self.trainer.load_state_dict(state["trainer"])
        self.iteration = int(state["iteration"])
        self.best = state.get("best")
        self.last_metrics = state.get("last_metrics")
        self.epoch_done = int(state["epoch"])
        batch = int(state.get("batch", 0))
        if state.get("history") is not None:
            self.history = state["history"].tolist()
        self.eval_history = list(state.get("eval_history") or [])
        self.starved = int(state.get("starved", 0))
        set_rng_state(state["rng"])
        self.last_checkpoint = (state["path"], self.iteration)
        within = f" (batch {batch}/{self.iters_per_epoch} of epoch {self.epoch_done + 1})" if batch else ""
        log.info("resumed from %s: %d epochs and %d iterations done%s, lr %.4g next", state["path"],
                 self.epoch_done, self.iteration, within, self.trainer.schedule(self.iteration))
        if batch >= self.iters_per_epoch:  # fewer batches per epoch than when it was written: the epoch is over
            return self.epoch_done + 1, 0
        return self.epoch_done, batch

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainRun:
        opts = self.opts
        self._build()
        start_epoch, start_batch = self._resume()
        if self.main:
            atomic_write_text(self.out / "config.yaml", dump_config(self.cfg))
            atomic_write_text(self.out / "label_dict.txt",
                              "".join(f"{i} {n}\n" for i, n in enumerate(self.spec.classes)))
        progress = _Progress(self.total_iters, opts.batch_size * self.world)
        for epoch in range(start_epoch, opts.epochs_iters):
            if self.iteration >= self.total_iters:
                break
            self._train_epoch(epoch, start_batch if epoch == start_epoch else 0, progress)
            self._end_epoch(epoch)
        summary = self._summary(done=True)
        if self.main:
            atomic_write_json(self.out / "train_result.json", summary)
            log.info("training done: %d epochs, %d iterations; best %s", self.epoch_done, self.iteration,
                     _metric_text(self.best))
        return TrainRun(summary, self.trainer, self.spec)

    def _train_epoch(self, epoch: int, first_batch: int, progress: _Progress) -> None:
        """The batches of ``epoch`` from ``first_batch`` on (> 0 when resuming within the epoch)."""
        opts = self.opts
        self.loader.set_epoch(epoch, first_batch)
        with torch.random.fork_rng(devices=[]):  # starting the loader draws a seed from torch's RNG: keep the RNG
            batches = iter(self.loader)          # where a run resumed within this epoch finds it
        bar = tqdm(total=min(self.iters_per_epoch - first_batch, self.total_iters - self.iteration),
                   desc=f"epoch {epoch + 1}/{opts.epochs_iters}", unit="it", leave=False, file=sys.stdout,
                   disable=not (self.progress and self.main), dynamic_ncols=True)
        try:
            for b, batch in enumerate(batches, start=first_batch):
                try:
                    stats = self.trainer.step(batch, self.iteration)
                except NonFiniteLossError as e:
                    raise NonFiniteLossError(
                        f"{e} (epoch {epoch + 1}, batch {b + 1}/{self.iters_per_epoch}); training stopped. "
                        f"{self._last_good_text()} Lower Train.learning_rate or check the annotations, then "
                        f"resume with -o Train.resume_path={self.out}") from None
                self._check_starved(stats)
                self.iteration += 1
                self.history.append([float(self.iteration - 1), *(stats[k] for k in LOSS_TERMS), stats["lr"]])
                progress.tick()
                bar.update(1)
                bar.set_postfix_str(
                    f"loss {stats['loss']:.3f} cls {stats['loss_cls']:.3f} iou {stats['loss_iou']:.3f} "
                    f"dfl {stats['loss_dfl']:.3f} lr {stats['lr']:.2e} {progress.images_per_s():.1f} img/s "
                    f"eta {progress.eta(self.iteration)}", refresh=False)
                if self.iteration % opts.log_interval == 0 or b == 0 and epoch == 0:
                    log.info("epoch %d/%d iter %d/%d (%d/%d) loss %.4f loss_cls %.4f loss_iou %.4f loss_dfl "
                             "%.4f lr %.6f %.2f img/s eta %s", epoch + 1, opts.epochs_iters, b + 1,
                             self.iters_per_epoch, self.iteration, self.total_iters, stats["loss"],
                             stats["loss_cls"], stats["loss_iou"], stats["loss_dfl"], stats["lr"],
                             progress.images_per_s(), progress.eta(self.iteration))
                if self.iteration >= self.total_iters:
                    break
                if self._checkpoint_due(b):
                    self._save_checkpoint(batch=b + 1)
        finally:
            bar.close()

    def _checkpoint_due(self, b: int) -> bool:
        """Every ``save_interval_iters`` iterations, except at the last batch (the end of the epoch saves)."""
        interval = self.opts.save_interval_iters
        return interval > 0 and self.iteration % interval == 0 and b + 1 < self.iters_per_epoch

    def _check_starved(self, stats: Mapping[str, float]) -> None:
        """Warn when boxes keep getting no positive anchor: the run has diverged or collapsed (all scores ~0,
        degenerate boxes), which the finite-loss check cannot see because the loss then sits near zero."""
        if stats["num_gt"] > 0 and stats["loss_iou"] == 0.0 and stats["loss_dfl"] == 0.0:
            self.starved += 1
        else:
            self.starved = 0
        if self.starved == STARVED_STEPS:
            log.warning("iteration %d: for %d steps in a row no anchor was assigned to any ground-truth box (loss "
                        "%.3g): predictions have collapsed, usually after the loss diverged; lower "
                        "Train.learning_rate (the reference uses 0.01 for a total batch of 64) or start from "
                        "pretrained weights", self.iteration + 1, STARVED_STEPS, stats["loss"])

    def _last_good_text(self) -> str:
        if self.last_checkpoint is not None:
            path, iteration = self.last_checkpoint
            return f"The last good checkpoint is {path} (iteration {iteration})."
        return "No checkpoint was written yet."

    def _end_epoch(self, epoch: int) -> None:
        self.epoch_done = epoch + 1
        self._save_checkpoint(batch=0)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, batch: int) -> None:
        """Rank 0 writes what the run has to show (``batch``: batches done in the current epoch; 0 at its end, which
        also evaluates); every rank waits for it. A full disk stops every rank: the write of each file is atomic,
        so the previous checkpoint stays, and the error says which one to resume from."""
        failure: DiskFullError | None = None
        if self.main:
            try:
                self._write_outputs(batch)
            except DiskFullError as e:
                failure = e
        if self._any_rank_failed(failure is not None):
            raise self._disk_full(failure)

    def _write_outputs(self, batch: int) -> None:
        """At an epoch's end the evaluation, ``best_model/`` and the curves; then the checkpoint, ``latest/`` (EMA
        weights, as the reference saves) and ``train_result.json``."""
        weights = self.trainer.ema.state_dict_for_export()
        info: dict[str, Any] = {"epoch": self.epoch_done, "iteration": self.iteration}
        if batch:
            info["batch"] = batch
        else:
            self._evaluate_epoch(weights, info)
            plot_training_curves(self.history, LOSS_TERMS, self.eval_history, self.out / CURVES_NAME)
        path = write_checkpoint(self.out, self._checkpoint_state(batch), keep=self.opts.keep_checkpoints)
        self.last_checkpoint = (path, self.iteration)
        save_model_dir(self.out / "latest", weights, self.spec, info)
        atomic_write_json(self.out / "train_result.json", self._summary(done=False))
        if batch:
            log.info("iteration %d (epoch %d, batch %d/%d): saved %s", self.iteration, self.epoch_done + 1, batch,
                     self.iters_per_epoch, path)
        else:
            log.info("epoch %d done: saved %s and %s", self.epoch_done, path, self.out / "latest")

    def _evaluate_epoch(self, weights: Mapping[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Evaluate the EMA weights when due (every ``eval_interval`` epochs and after the last); a better mAP
        (or, without a val split, every epoch) is the new ``best_model/``."""
        last = self.epoch_done == self.opts.epochs_iters or self.iteration >= self.total_iters
        if self.eval_net is None:
            self.best = {"mAP": None, "epoch": self.epoch_done}
            save_model_dir(self.out / "best_model", weights, self.spec, info)
            return
        if not (self.epoch_done % self.opts.eval_interval == 0 or last):
            return
        self.last_metrics = self._evaluate(weights)
        info["metrics"] = self.last_metrics
        self.eval_history.append({**self.last_metrics, "epoch": self.epoch_done})
        if self.best is None or self.last_metrics["mAP"] > self.best["mAP"]:
            self.best = {**self.last_metrics, "epoch": self.epoch_done}
            save_model_dir(self.out / "best_model", weights, self.spec, info)
            log.info("new best model (epoch %d): %s", self.epoch_done, _metric_text(self.best))

    def _checkpoint_state(self, batch: int) -> dict[str, Any]:
        """Everything the rest of the run depends on, as tensors and plain types (``weights_only``-safe)."""
        return {
            "trainer": self.trainer.state_dict(), "epoch": self.epoch_done, "batch": batch,
            "iteration": self.iteration, "iters_per_epoch": self.iters_per_epoch,
            "schedule": dataclasses.asdict(self.trainer.schedule), "rng": rng_state(),
            "best": self.best, "last_metrics": self.last_metrics, "starved": self.starved,
            "spec": {"model_name": self.spec.name, "num_classes": self.spec.num_classes,
                     "classes": list(self.spec.classes)},
            "options": {"Global": dataclasses.asdict(self.cfg.Global), "Train": dataclasses.asdict(self.opts)},
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 2 + len(LOSS_TERMS)),
            "eval_history": self.eval_history,
        }

    def _any_rank_failed(self, failed: bool) -> bool:
        """Whether any rank failed (every rank learns it: the others would otherwise wait for rank 0 forever)."""
        if self.world == 1:
            return failed
        flag = torch.tensor([int(failed)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _disk_full(self, failure: DiskFullError | None) -> PPYOLOESODError:
        if failure is None:  # another rank's: rank 0 writes and reports it
            return PPYOLOESODError("training stopped: rank 0 could not write its checkpoint (disk full); see its "
                                   "error")
        resume = hint(python=f"TrainConfig(resume_path={str(self.out)!r})", cli=f"-o Train.resume_path={self.out}")
        message = (f"{failure} Training stopped at iteration {self.iteration}. {self._last_good_text()} Once there is "
                   f"space, resume with {resume}.")
        log.error("%s", message)
        return DiskFullError(failure.errno, message, failure.filename)

    def _evaluate(self, weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        from ..eval.evaluate import evaluate
        from .detect import make_detect_fn

        assert self.eval_net is not None and self.val_json is not None
        self.eval_net.load_state_dict(weights)
        size = self.opts.eval_size
        detect_fn = make_detect_fn(self.eval_net, self.device, (size, size) if size else None)
        report = evaluate(detect_fn, self.val_json, self.image_dir,
                          batch_size=self.opts.eval_batch_size, class_names=list(self.spec.classes),
                          plot=False, progress=self.progress, verbose=False)
        m = report["metrics"]
        metrics = {"mAP": float(m["AP"]), "AP50": float(m["AP50"]), "AP75": float(m["AP75"]),
                   "APs": float(m["APs"])}
        log.info("eval (EMA weights, epoch %d, %s): %s", self.epoch_done, self.val_json.name,
                 _metric_text(metrics))
        return metrics

    def _summary(self, done: bool) -> dict[str, Any]:
        out = self.out
        models: dict[str, Any] = {}
        if (out / "latest" / WEIGHTS_NAME).is_file():
            models["last_1"] = {"score": (self.last_metrics or {}).get("mAP"), "epoch": self.epoch_done,
                                "dir": str(out / "latest"), "weights": str(out / "latest" / WEIGHTS_NAME),
                                "checkpoint": str(out / "latest" / CHECKPOINT_NAME)}
        if self.best is not None and (out / "best_model" / WEIGHTS_NAME).is_file():
            models["best"] = {"score": self.best.get("mAP"), "epoch": self.best.get("epoch"),
                              "dir": str(out / "best_model"), "weights": str(out / "best_model" / WEIGHTS_NAME)}
        return {
            "model_name": self.spec.name, "done_flag": done, "config": str(out / "config.yaml"),
            "label_dict": str(out / "label_dict.txt"), "train_log": str(out / "train.log"),
            "epochs": self.epoch_done, "iterations": self.iteration, "num_classes": self.spec.num_classes,
            "curves": str(out / CURVES_NAME),
            "best_metric": self.best, "models": models,
        }


def _metric_text(metrics: Mapping[str, Any] | None) -> str:
    if not metrics or metrics.get("mAP") is None:
        return "n/a (no evaluation)"
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
