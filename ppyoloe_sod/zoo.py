"""The published models as typed data (architecture, input size, classes, weights, metrics, size).

Numbers come from PaddleDetection's configs and READMEs and PaddleX's model list; parameter counts are the
element totals of the Paddle state_dict (BN statistics and the fixed DFL projection included), which the
converter and a test check against the modules we build.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .errors import ConfigError

VISDRONE_CLASSES: tuple[str, ...] = (
    "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor",
)

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

_PADDLEX_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/{}_pretrained.pdparams"
_PADDLEDET_URL = "https://bj.bcebos.com/v1/paddledet/models/{}.pdparams"


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build the network."""

    depth_mult: float
    width_mult: float
    num_classes: int
    reg_range: tuple[int, int]
    use_transformer: bool
    backbone_layers: tuple[int, ...] = (3, 6, 6, 3)
    backbone_channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    neck_out_channels: tuple[int, ...] = (768, 384, 192)
    neck_block_num: int = 3
    transformer_layers: int = 4
    transformer_heads: int = 4
    transformer_ffn: int = 2048
    strides: tuple[int, ...] = (32, 16, 8)

    @property
    def bins(self) -> int:
        return self.reg_range[1] - self.reg_range[0]


@dataclass(frozen=True)
class NMSSpec:
    """Paddle MultiClassNMS settings (score strictly above score_threshold, IoU without +1)."""

    score_threshold: float = 0.01
    nms_top_k: int = 10000
    keep_top_k: int = 500
    iou_threshold: float = 0.6


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: ArchSpec
    input_size: tuple[int, int]  # (h, w) at evaluation
    classes: tuple[str, ...]
    weights_url: str
    num_params: int  # elements over all Paddle state_dict entries (BN statistics, DFL projection included)
    num_state_tensors: int
    mirror_urls: tuple[str, ...] = ()
    # sha256 of the published file; None where it could not be fetched to pin (recorded on first download).
    sha256: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # published, dataset named in metrics_dataset
    metrics_dataset: str = ""
    train_sizes: tuple[int, ...] = ()
    base_lr: float = 0.01
    pretrain_from: str | None = None
    nms: NMSSpec = NMSSpec()
    draw_threshold: float = 0.5

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes

    def with_classes(self, class_names: "tuple[str, ...] | list[str]") -> "ModelSpec":
        """This model fine-tuned on other classes: same network, the head sized for ``class_names``."""
        names = tuple(str(c) for c in class_names)
        if not names:
            raise ValueError(f"{self.name}: a model needs at least one class")
        if names == self.classes:
            return self
        return replace(self, arch=replace(self.arch, num_classes=len(names)), classes=names)


_SOD_S = ArchSpec(depth_mult=0.33, width_mult=0.50, num_classes=10, reg_range=(-2, 8), use_transformer=True)
_SOD_L = ArchSpec(depth_mult=1.0, width_mult=1.0, num_classes=10, reg_range=(-2, 8), use_transformer=True)
_SOD_LARGE = ArchSpec(depth_mult=1.0, width_mult=1.0, num_classes=10, reg_range=(-2, 20), use_transformer=True)
_COCO_S = ArchSpec(depth_mult=0.33, width_mult=0.50, num_classes=80, reg_range=(0, 17), use_transformer=False)
_COCO_L = ArchSpec(depth_mult=1.0, width_mult=1.0, num_classes=80, reg_range=(0, 17), use_transformer=False)

_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="PP-YOLOE_plus_SOD-S", arch=_SOD_S, input_size=(640, 640), classes=VISDRONE_CLASSES,
            weights_url=_PADDLEX_URL.format("PP-YOLOE_plus_SOD-S"),
            mirror_urls=(_PADDLEDET_URL.format("ppyoloe_plus_sod_crn_s_80e_visdrone"),),
            num_params=20_122_054, num_state_tensors=477,
            metrics={"mAP": 25.1, "AP50": 42.8}, metrics_dataset="VisDrone2019-DET val, COCO API, 640x640",
            train_sizes=tuple(range(320, 769, 32)), base_lr=0.01, pretrain_from="PP-YOLOE_plus-S",
        ),
        ModelSpec(
            name="PP-YOLOE_plus_SOD-L", arch=_SOD_L, input_size=(640, 640), classes=VISDRONE_CLASSES,
            weights_url=_PADDLEX_URL.format("PP-YOLOE_plus_SOD-L"),
            mirror_urls=(_PADDLEDET_URL.format("ppyoloe_plus_sod_crn_l_80e_visdrone"),),
            num_params=86_561_266, num_state_tensors=819,
            metrics={"mAP": 31.9, "AP50": 52.1}, metrics_dataset="VisDrone2019-DET val, COCO API, 640x640",
            train_sizes=tuple(range(320, 769, 32)), base_lr=0.01, pretrain_from="PP-YOLOE_plus-L",
        ),
        ModelSpec(
            name="PP-YOLOE_plus_SOD-largesize-L", arch=_SOD_LARGE, input_size=(1920, 1920),
            classes=VISDRONE_CLASSES,
            weights_url=_PADDLEX_URL.format("PP-YOLOE_plus_SOD-largesize-L"),
            mirror_urls=(_PADDLEDET_URL.format("ppyoloe_plus_sod_crn_l_largesize_80e_visdrone"),),
            num_params=87_142_030, num_state_tensors=819,
            metrics={"mAP": 42.7, "AP50": 65.9}, metrics_dataset="VisDrone2019-DET val, COCO API, 1920x1920",
            train_sizes=tuple(range(1024, 1921, 64)), base_lr=0.00125, pretrain_from="PP-YOLOE_plus-L",
        ),
        ModelSpec(
            name="PP-YOLOE_plus-S", arch=_COCO_S, input_size=(640, 640), classes=COCO_CLASSES,
            weights_url=_PADDLEDET_URL.format("ppyoloe_plus_crn_s_80e_coco"),
            # counted on ppdet's module built with these numbers (the parity test checks the structure)
            num_params=8_105_523, num_state_tensors=429,
            metrics={"mAP": 43.7}, metrics_dataset="COCO val2017, 640x640",
            train_sizes=tuple(range(320, 769, 32)), base_lr=0.001,
        ),
        ModelSpec(
            name="PP-YOLOE_plus-L", arch=_COCO_L, input_size=(640, 640), classes=COCO_CLASSES,
            weights_url=_PADDLEDET_URL.format("ppyoloe_plus_crn_l_80e_coco"),
            num_params=54_147_487, num_state_tensors=771,
            metrics={"mAP": 52.9}, metrics_dataset="COCO val2017, 640x640",
            train_sizes=tuple(range(320, 769, 32)), base_lr=0.001,
        ),
    )
}

DEFAULT_MODEL = "PP-YOLOE_plus_SOD-S"
SIZE_MULTIPLE = 32  # the largest stride: every network input side is a multiple of it


class UnknownModelError(ConfigError, KeyError):
    """A model name that is not published; still a KeyError for callers that test names with ``get_spec``."""

    __str__ = Exception.__str__  # KeyError's own would print the message quoted


def list_models() -> list[str]:
    return list(_MODELS)


def get_spec(name: str) -> ModelSpec:
    """The spec of a published model; accepts hub-style aliases (``ppyoloe_plus_sod_s``)."""
    if name in _MODELS:
        return _MODELS[name]
    by_alias = {hub_name(n): n for n in _MODELS}
    key = name.lower().replace("-", "_")
    if key in by_alias:
        return _MODELS[by_alias[key]]
    raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(_MODELS)}")


def hub_name(name: str) -> str:
    """'PP-YOLOE_plus_SOD-largesize-L' -> 'ppyoloe_plus_sod_largesize_l'."""
    return name.lower().replace("pp-yoloe", "ppyoloe").replace("-", "_")


def check_input_sizes(key: str, sizes: Sequence[Any]) -> None:
    """ConfigError naming ``key`` unless ``sizes`` is a non-empty list of positive multiples of 32."""
    if not sizes:
        raise ConfigError(f"{key} is empty; list at least one input size, e.g. [320, 352]")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s <= 0 or s % SIZE_MULTIPLE]
    if bad:
        raise ConfigError(f"{key}: {', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not a positive "
                          f"multiple of {SIZE_MULTIPLE} (the network's largest stride), e.g. 320 or 640")
