"""PaddleDetection 2.6's training loop and ours, from the same weights over the same batches, in lockstep.

ppdet's side is what its ``Trainer.train`` does per iteration with the reference recipe's classes:
``LearningRate([CosineDecay, LinearWarmup])``, ``OptimizerBuilder`` (Momentum 0.9, ``L2`` regularizer 5e-4; the
BatchNorm parameters of ``ConvBNLayer`` carry their own ``L2Decay(0.0)``), the model's loss, ``optimizer.step()``,
``lr.step()``, ``clear_grad()`` and ``ModelEMA.update()`` ('threshold' decay, ``proj_conv.weight`` blacklisted as
in the PP-YOLOE+ configs). Ours is the training engine's public step API (``Trainer.build`` / ``Trainer.step``).

Lockstep: before each iteration our network gets ppdet's current weights and BatchNorm statistics; everything else
on our side (momentum buffers, LR schedule, EMA, iteration count) carries over from our own previous steps. Why:
two float32 implementations of this network cannot follow one free-running trajectory. Measured at 96 px, batch 2:
our loop against itself with the weights perturbed by 1e-7 (relative) keeps the losses within 3e-6 for 12
iterations (LR 3e-4), until the argmax of the SPP max-pools (every window covers the whole 3x3 map at stride 32)
flips on a near-tie in one channel; the gradient then flows through another pixel and the losses part: 1e-4 at
iteration 13, 2e-2 at 19, more flips every step after. ppdet against ours free-running at LR 0.01: 4e-5 at
iteration 4, 1e-3 at 5, 4e-2 at 6, 0.1-0.5 from 9 on. In lockstep every iteration starts from the same point, so
the differences stay at float32 noise, while momentum, EMA and schedule still integrate all 40 iterations.

Dropout (0.1 in the neck's transformer, attention and FFN) is the one random draw the two frameworks cannot share,
so it is set to 0 on both sides; every other part of a training step is deterministic.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
import torch
from ppdet.optimizer.ema import ModelEMA as PaddleEMA
from ppdet.optimizer.optimizer import CosineDecay, LearningRate, LinearWarmup, OptimizerBuilder
from torch import nn

from ppyoloe_sod import boxes as B
from ppyoloe_sod.models import load_model
from ppyoloe_sod.train.engine import Trainer  # the training engine's public step API: its only import here
from ppyoloe_sod.weights.convert import paddle_to_torch, rename_paddle_tensors

from .ppdet_reference import PaddleDetector, build

MODEL = "PP-YOLOE_plus_SOD-S"
SIZE = 96  # input side: 3x3 tokens for the transformer, 189 anchors
BATCH = 2
NUM_IMAGES = 16  # one epoch = 8 batches
EPOCHS = 5  # 40 iterations: 8 of warmup, 32 on the cosine
COSINE_EPOCHS = 6  # the cosine horizon lies past the last iteration, as in the reference (96 vs 80 epochs)
BASE_LR = 0.01  # the reference's base LR (total batch 64), unscaled: weight decay then moves weights measurably
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
EMA_DECAY = 0.9998
EMA_BLACK_LIST = ["proj_conv.weight"]
LOSS_TERMS = ("loss", "loss_cls", "loss_iou", "loss_dfl")
EMPTY_IMAGE = 5  # the dataset image without boxes
CLS_BIAS = -4.6  # mean class logit at the start: ppdet's prior init (score 0.01)
WEIGHT_FLOOR = 1e-2  # rel_diff's floor for weights (3 of 320 tensors hold less than 1e-3)


def iters_per_epoch() -> int:
    return NUM_IMAGES // BATCH


# ------------------------------------------------------------------------------------------------ data


def _image(rng: np.random.Generator, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A smooth noisy background with each box painted in a colour of its class: something to learn."""
    coarse = rng.uniform(0.2, 0.8, (3, SIZE // 8, SIZE // 8))
    img = np.repeat(np.repeat(coarse, 8, 1), 8, 2) + rng.normal(0, 0.05, (3, SIZE, SIZE))
    palette = np.linspace(0.0, 1.0, 10)
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        ys, xs = slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2)))
        img[:, ys, xs] = np.array([palette[c], 1.0 - palette[c], palette[(c * 3) % 10]])[:, None, None]
    return np.clip(img, 0, 1).astype(np.float32)


def _dataset(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image CHW in 0..1, boxes [k, 4] xyxy px, labels [k]) with 1-6 boxes of 3-40 px at non-grid positions;
    image ``EMPTY_IMAGE`` has none."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(NUM_IMAGES):
        k = 0 if i == EMPTY_IMAGE else int(rng.integers(1, 7))
        wh = rng.uniform(3, 40, (k, 2))
        xy = rng.uniform(0, 1, (k, 2)) * (SIZE - wh)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32).reshape(-1, 4)
        labels = rng.integers(0, 10, k)
        out.append((_image(rng, boxes, labels), boxes, labels))
    return out


def _collate(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The loader's batch layout (ppdet's PadGT): boxes padded with zeros to the batch's largest count."""
    n = max(len(b) for _, b, _ in samples)
    labels = np.zeros((len(samples), n, 1), np.int64)
    boxes = np.zeros((len(samples), n, 4), np.float32)
    mask = np.zeros((len(samples), n, 1), np.float32)
    for i, (_, b, c) in enumerate(samples):
        boxes[i, : len(b)], labels[i, : len(b), 0], mask[i, : len(b)] = b, c, 1
    return {"images": np.stack([s[0] for s in samples]), "gt_labels": labels, "gt_boxes": boxes, "pad_mask": mask}


def make_batches(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """EPOCHS epochs over the dataset, reshuffled each epoch (the image without boxes shares its batch)."""
    data = _dataset(seed)
    rng = np.random.default_rng(seed + 1)
    batches = []
    for _ in range(EPOCHS):
        order = rng.permutation(NUM_IMAGES)
        batches += [_collate([data[j] for j in order[i: i + BATCH]]) for i in range(0, NUM_IMAGES, BATCH)]
    return batches


def eval_images(seed: int = 7) -> np.ndarray:
    """Two images the training never saw, for the EMA model's outputs."""
    return np.stack([img for img, _, _ in _dataset(seed)[:2]])


# ------------------------------------------------------------------------------------------------ ppdet


def _from_paddle(pd_state: dict[str, paddle.Tensor]) -> dict[str, np.ndarray]:
    """A full ppdet model state in our names and layouts."""
    state = paddle_to_torch({k: v.numpy() for k, v in pd_state.items()}, MODEL).state_dict
    return {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _paddle_dropout_off(model: paddle.nn.Layer) -> int:
    count = 0
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.p, count = 0.0, count + 1
        elif type(layer).__name__ == "MultiHeadAttention" and isinstance(getattr(layer, "dropout", None), float):
            layer.dropout, count = 0.0, count + 1
    return count


class PaddleLoop:
    """ppdet's Trainer.train iteration, with the recipe's optimizer, schedule and EMA classes."""

    def __init__(self, model: PaddleDetector) -> None:
        self.model = model
        self.dropout_sites = _paddle_dropout_off(model)
        self.schedule = LearningRate(base_lr=BASE_LR, schedulers=[
            CosineDecay(max_epochs=COSINE_EPOCHS), LinearWarmup(start_factor=0.0, epochs=1)])(iters_per_epoch())
        self.optimizer = OptimizerBuilder(regularizer={"type": "L2", "factor": WEIGHT_DECAY},
                                          optimizer={"type": "Momentum", "momentum": MOMENTUM})(self.schedule, model)
        self.ema = PaddleEMA(model, decay=EMA_DECAY, ema_decay_type="threshold", ema_black_list=EMA_BLACK_LIST)
        self.assigned: list[np.ndarray] = []
        model.yolo_head.assigner.register_forward_post_hook(
            lambda layer, inputs, outputs: self.assigned.append(outputs[0].numpy()))
        model.train()

    def step(self, batch: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        feats = self.model.neck(list(self.model.backbone({"image": paddle.to_tensor(batch["images"])})))
        losses = self.model.yolo_head(feats, {
            "gt_class": paddle.to_tensor(batch["gt_labels"]), "gt_bbox": paddle.to_tensor(batch["gt_boxes"]),
            "pad_gt_mask": paddle.to_tensor(batch["pad_mask"]), "epoch_id": iteration // iters_per_epoch()})
        losses["loss"].backward()
        self.optimizer.step()
        lr = self.optimizer.get_lr()
        self.schedule.step()
        self.optimizer.clear_grad()
        self.ema.update(self.model)
        return {**{k: float(losses[k].numpy().reshape(-1)[0]) for k in LOSS_TERMS}, "lr": float(lr)}

    def state(self) -> dict[str, np.ndarray]:
        return _from_paddle(self.model.state_dict())

    def velocities(self) -> dict[str, np.ndarray]:
        """The Momentum accumulators, in our parameter names and layouts."""
        by_param = {p.name: n for n, p in self.model.named_parameters()}
        suffix = "_velocity_0"
        velocity = {by_param[k[: -len(suffix)]]: v.numpy() for k, v in self.optimizer.state_dict().items()
                    if k.endswith(suffix)}
        return {k: v.numpy() for k, v in rename_paddle_tensors(velocity).items()}

    def finish(self, images: np.ndarray) -> EmaResult:
        """The EMA weights (``ModelEMA.apply``, as ppdet saves them) and that model's dense outputs."""
        self.model.set_state_dict(self.ema.apply())
        self.model.eval()
        with paddle.no_grad():
            _, pans = self.model.features(images)
            scores, dist, points, strides = (t.numpy() for t in self.model.yolo_head(pans))
        boxes = np.concatenate([points - dist[..., :2], points + dist[..., 2:]], -1) * strides
        return EmaResult(self.state(), scores.transpose(0, 2, 1), boxes)


# ------------------------------------------------------------------------------------------------ ours


def _torch_dropout_off(model: nn.Module) -> int:
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p, count = 0.0, count + 1
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout, count = 0.0, count + 1
    return count


class OurLoop:
    """Our training engine, one ``step`` per batch, with the recipe's numbers."""

    def __init__(self, net: nn.Module) -> None:
        self.dropout_sites = _torch_dropout_off(net)
        self.trainer = Trainer.build(net, BASE_LR, iters_per_epoch(), device="cpu", cosine_epochs=COSINE_EPOCHS,
                                     amp="off", ema_decay=EMA_DECAY)
        self.net = self.trainer.net
        self.assigned: list[np.ndarray] = []
        self.trainer.criterion.assigner.register_forward_hook(
            lambda module, inputs, outputs: self.assigned.append(outputs.labels.numpy().copy()))

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Weights and BN statistics in place (the optimizer keeps its references and momentum)."""
        missing, unexpected = self.net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                       strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)

    def step(self, batch: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        stats = self.trainer.step({k: torch.from_numpy(v) for k, v in batch.items()}, iteration)
        return {k: float(stats[k]) for k in (*LOSS_TERMS, "lr")}

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()
                if not k.endswith("num_batches_tracked")}

    def velocities(self) -> dict[str, np.ndarray]:
        names = {id(p): n for n, p in self.net.named_parameters()}
        return {names[id(p)]: s["momentum_buffer"].numpy().copy() for p, s in self.trainer.optimizer.state.items()}

    def finish(self, images: np.ndarray) -> EmaResult:
        ema_state = self.trainer.ema.state_dict_for_export()
        eval_net = copy.deepcopy(self.net)
        eval_net.load_state_dict(ema_state)
        eval_net.eval()
        with torch.no_grad():
            x = torch.from_numpy(images)
            raw = eval_net(x)
            points, strides = eval_net.anchors(x.shape[-2], x.shape[-1])
            boxes, scores = B.decode(raw.cls_logits, raw.reg_logits, points, strides, eval_net.proj)
        weights = {k: v.numpy().copy() for k, v in ema_state.items() if not k.endswith("num_batches_tracked")}
        return EmaResult(weights, scores.numpy(), boxes.numpy())


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class EmaResult:
    weights: dict[str, np.ndarray]  # bias-corrected EMA weights, our names
    scores: np.ndarray  # the EMA model on eval_images(): [B, L, C]
    boxes: np.ndarray  # [B, L, 4] xyxy px, before NMS


@dataclass
class StepDiff:
    """One iteration: both sides' stats, and how far our weights after the step are from ppdet's."""

    ref: dict[str, float]
    ours: dict[str, float]
    label_flips: int  # anchors assigned differently
    positives: int  # anchors assigned to a box (ppdet)
    empty_images: int  # images of the batch without boxes
    weights: dict[str, float]  # per tensor (BN statistics included): rel_diff after the step, floor WEIGHT_FLOOR
    velocity: dict[str, tuple[float, float]]  # per parameter: (max |ours - ppdet|, max |ppdet|) of the momentum


@dataclass
class Lockstep:
    steps: list[StepDiff] = field(default_factory=list)
    ref_ema: EmaResult | None = None
    our_ema: EmaResult | None = None
    dropout_sites: tuple[int, int] = (0, 0)


def rel_diff(ours: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> float:
    """max |ours - ref| / max(max |ref|, floor): relative to the tensor's scale, or to ``floor`` for tensors that
    hold next to nothing (the last encoder layer's norm2.bias stays ~1e-8: a BatchNorm follows, so its gradient is
    zero up to rounding)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), floor)
    diff = float(np.abs(ours - ref).max())
    return diff / scale if scale > 0 else diff


def state_diffs(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], floor: float) -> dict[str, float]:
    """:func:`rel_diff` for every tensor of two states with the same keys."""
    assert ours.keys() == ref.keys(), sorted(set(ours) ^ set(ref))[:5]
    return {k: rel_diff(ours[k], ref[k], floor) for k in ref}


def run_lockstep(weights_path: Path, batches: list[dict[str, np.ndarray]], images: np.ndarray) -> Lockstep:
    """Both loops over ``batches``; ours restarts each iteration from ppdet's weights (module docstring)."""
    pd_model = build(MODEL, seed=0, cls_bias=CLS_BIAS)
    paddle.save(pd_model.state_dict(), str(weights_path))
    ref = PaddleLoop(pd_model)
    ours = OurLoop(load_model(MODEL, weights_path))  # the user's path: .pdparams -> our reader and converter
    out = Lockstep(dropout_sites=(ref.dropout_sites, ours.dropout_sites))
    ref_state = ref.state()
    for i, batch in enumerate(batches):
        ours.load(ref_state)
        a, b = ref.step(batch, i), ours.step(batch, i)
        ref_state = ref.state()
        flips = int((ref.assigned[-1] != ours.assigned[-1]).sum())
        positives = int((ref.assigned[-1] != ours.net.spec.num_classes).sum())
        empty = int((batch["pad_mask"].sum((1, 2)) == 0).sum())
        ref_v, our_v = ref.velocities(), ours.velocities()
        assert ref_v.keys() == our_v.keys(), sorted(set(ref_v) ^ set(our_v))[:5]
        velocity = {k: (float(np.abs(our_v[k] - v).max()), float(np.abs(v).max())) for k, v in ref_v.items()}
        out.steps.append(StepDiff(a, b, flips, positives, empty, state_diffs(ours.state(), ref_state, WEIGHT_FLOOR),
                                  velocity))
    out.ref_ema, out.our_ema = ref.finish(images), ours.finish(images)
    return out
