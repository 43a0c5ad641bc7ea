"""Builds PaddleDetection's PP-YOLOE+ (SOD) modules with explicit constructor arguments, as a test oracle.

ppdet 2.6.0 ships the model code but no configs, so the numbers of ``ppyoloe_sod.zoo`` are passed by hand. The
head's prediction layers start at zero and BN statistics at (0, 1) in ppdet; both are randomised here so that a
comparison can fail (see docs/DESIGN.md, "The Paddle reference as a test oracle").
"""
from __future__ import annotations

import numpy as np
import paddle
from ppdet.modeling.assigners import ATSSAssigner, TaskAlignedAssigner_CR
from ppdet.modeling.backbones.cspresnet import CSPResNet
from ppdet.modeling.heads.ppyoloe_head import PPYOLOEHead
from ppdet.modeling.layers import MultiClassNMS
from ppdet.modeling.necks.custom_pan import CustomCSPPAN

from ppyoloe_sod.zoo import get_spec


class PaddleDetector(paddle.nn.Layer):
    """backbone / neck / yolo_head under the same names as PaddleDetection's YOLOv3 architecture."""

    def __init__(self, name: str, eval_size: tuple[int, int] | None = None):
        super().__init__()
        arch = get_spec(name).arch
        self.backbone = CSPResNet(layers=list(arch.backbone_layers), channels=list(arch.backbone_channels),
                                  act="swish", return_idx=[1, 2, 3], use_large_stem=True,
                                  width_mult=arch.width_mult, depth_mult=arch.depth_mult, use_alpha=True)
        in_ch = [s.channels for s in self.backbone.out_shape]
        self.neck = CustomCSPPAN(in_channels=in_ch, out_channels=list(arch.neck_out_channels), act="swish",
                                 stage_num=1, block_num=arch.neck_block_num, spp=True, drop_block=False,
                                 width_mult=arch.width_mult, depth_mult=arch.depth_mult,
                                 use_trans=arch.use_transformer, num_layers=arch.transformer_layers,
                                 nhead=arch.transformer_heads, dim_feedforward=arch.transformer_ffn,
                                 eval_size=list(eval_size) if eval_size else None)
        head_in = [s.channels for s in self.neck.out_shape]
        sod = arch.reg_range[0] != 0
        self.yolo_head = PPYOLOEHead(
            in_channels=head_in, num_classes=arch.num_classes, act="swish", fpn_strides=list(arch.strides),
            grid_cell_scale=5.0, grid_cell_offset=0.5, reg_max=arch.bins - 1,
            reg_range=list(arch.reg_range) if sod else None, static_assigner_epoch=-1, use_varifocal_loss=True,
            static_assigner=ATSSAssigner(topk=9, num_classes=arch.num_classes),
            assigner=TaskAlignedAssigner_CR(topk=13, alpha=1.0, beta=6.0, center_radius=1.0),
            nms=MultiClassNMS(score_threshold=0.01, nms_top_k=10000, keep_top_k=500, nms_threshold=0.6),
            eval_size=list(eval_size) if eval_size else None,
            loss_weight={"class": 1.0, "iou": 2.5, "dfl": 0.5})

    def features(self, images: np.ndarray):
        """Backbone, neck and head outputs for a float32 NCHW batch (eval mode)."""
        x = paddle.to_tensor(images)
        c3c4c5 = self.backbone({"image": x})
        pans = self.neck(list(c3c4c5))  # the neck overwrites C5 in the list it is given: pass a copy
        return c3c4c5, pans


def randomize(model: paddle.nn.Layer, seed: int = 0, cls_bias: float = -1.0, head_scale: float = 1.0,
              cls_std: float = 0.005) -> None:
    """Random BN statistics/affine, alphas and head predictors, so every stage carries a distinct signal."""
    rng = np.random.default_rng(seed)
    for name, p in model.state_dict().items():
        shape = p.shape
        if name.endswith("._mean"):
            v = rng.normal(0, 0.1, shape)
        elif name.endswith("._variance"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(".bn.weight"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bn.bias"):
            v = rng.normal(0, 0.1, shape)
        elif name.endswith(".alpha"):
            v = rng.uniform(0.5, 1.5, shape)
        elif "yolo_head.pred_cls" in name:
            v = rng.normal(0, cls_std * head_scale, shape) if name.endswith("weight") else rng.normal(cls_bias, 0.5, shape)
        elif "yolo_head.pred_reg" in name:
            # Small weights: the feature signal still moves boxes by pixels (so a wrong stem shows), while the
            # float32 rounding noise of ~100 layers, amplified by stride 32, stays under the 1e-3 px tolerance.
            v = rng.normal(0, 0.002 * head_scale, shape) if name.endswith("weight") else rng.normal(0, 1.0, shape)
        else:
            continue
        p.set_value(v.astype("float32"))


def build(name: str, eval_size=None, seed: int = 0, cls_bias: float = -1.0, head_scale: float = 1.0,
          cls_std: float = 0.005) -> PaddleDetector:
    """A ppdet model with random weights in eval mode; ``cls_bias`` sets the mean class logit (about -5 leaves
    only a few hundred candidates above the 0.01 score threshold, so NMS rather than keep_top_k decides);
    ``head_scale`` scales the prediction-layer weights (at 1920 the 756,000 candidates reach far into the tails
    and would saturate the sigmoid at 1.0 unless the logits spread less)."""
    paddle.seed(seed)
    model = PaddleDetector(name, eval_size)
    randomize(model, seed, cls_bias, head_scale, cls_std)
    model.eval()
    return model


def nms_inputs(head: PPYOLOEHead, head_outs, scale_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes [L, 4] (original-image pixels) and scores [L, C] of image 0 exactly as ``post_process`` hands
    them to its NMS: ppdet's own decode and rescale, stopped before NMS through the head's ``exclude_nms`` switch."""
    head.exclude_nms = True
    try:
        boxes, scores, _ = head.post_process(head_outs, paddle.to_tensor(scale_factor))
    finally:
        head.exclude_nms = False
    return boxes.numpy()[0], scores.numpy()[0].T.copy()


class _InferenceGraph(paddle.nn.Layer):
    """What PaddleDetection exports: /255 inside the graph (fuse_normalize), decode, rescale, multiclass NMS."""

    def __init__(self, model: PaddleDetector):
        super().__init__()
        self.model = model

    def forward(self, image, scale_factor):
        head = self.model.yolo_head
        feats = self.model.neck(list(self.model.backbone({"image": image * (1.0 / 255.0)})))
        scores, dist, points, strides = head(feats)
        lt, rb = paddle.split(dist, 2, -1)
        boxes = paddle.concat([points - lt, points + rb], -1) * strides
        sy, sx = paddle.split(scale_factor, 2, axis=-1)
        boxes = boxes / paddle.concat([sx, sy, sx, sy], axis=-1).reshape([-1, 1, 4])
        # ppdet's MultiClassNMS wrapper fails under Paddle 3's static IR; call the kernel directly.
        out, _, num = paddle._C_ops.multiclass_nms3(boxes, scores, None, 0.01, 10000, 500, 0.6, True, 1.0, -1)
        return out, num


def export_inference(model: PaddleDetector, out_dir, model_name: str, size: tuple[int, int],
                     label_list: list[str]) -> None:
    """Write a PaddleX model folder (inference.json/.pdiparams + inference.yml) for a model built with eval_size."""
    import os

    import yaml
    from paddle.static import InputSpec

    os.makedirs(out_dir, exist_ok=True)
    for layer in model.sublayers():  # as ppdet's exporter does: RepVGG branches fused into one conv
        if hasattr(layer, "convert_to_deploy"):
            layer.convert_to_deploy()
    graph = _InferenceGraph(model)
    graph.eval()
    static = paddle.jit.to_static(graph, input_spec=[InputSpec([None, 3, *size], "float32", "image"),
                                                     InputSpec([None, 2], "float32", "scale_factor")],
                                  full_graph=True)
    paddle.jit.save(static, os.path.join(str(out_dir), "inference"))
    config = {
        "mode": "paddle", "draw_threshold": 0.5, "metric": "COCO", "use_dynamic_shape": False,
        "Global": {"model_name": model_name}, "arch": "YOLO", "min_subgraph_size": 3,
        "Preprocess": [{"type": "Resize", "interp": 2, "keep_ratio": False, "target_size": list(size)},
                       {"type": "Permute"}],
        "label_list": list(label_list),
    }
    with open(os.path.join(str(out_dir), "inference.yml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
