"""The one ONNX export of the network, and the check that its graph suits TensorRT's ONNX parser.

The graph holds the network only: decode and the Paddle-exact NMS run in torch after every backend, so no NMS
(and no op with a data-dependent output shape) ever enters it.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_bytes
from ..nn.detector import Detector

ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("cls_logits", "reg_logits")
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM = "batch", "height", "width"

# Ops of the exported graph that onnx-tensorrt's parser supports (docs/operators.md of onnx/onnx-tensorrt, for
# TensorRT 8.6 and later). A new op in the graph fails tensorrt_problems until it is checked there and added.
TENSORRT_OPS = frozenset({
    "Add", "Cast", "Concat", "Constant", "Conv", "Cos", "Div", "Erf", "Expand", "Gather", "Gemm", "HardSigmoid",
    "Identity", "LayerNormalization", "MatMul", "MaxPool", "Mul", "Range", "ReduceMean", "Reshape", "Resize",
    "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Sqrt", "Sub", "Transpose", "Unsqueeze", "Squeeze", "Pow",
    "Relu", "AveragePool", "GlobalAveragePool", "Split", "Tanh", "Equal", "Where", "ConstantOfShape", "Neg", "TopK",
})
# Ops whose output shape depends on the data: TensorRT cannot plan them (NonZero) or they are NMS itself.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Loop", "If", "Scan"})
# An INT64 constant is fine when it is a shape, an axis list or an index: a handful of values in int32 range,
# which TensorRT narrows to INT32 losslessly. More values than this would be INT64 weights. The one value outside
# int32 the exporter writes is INT64_MAX as a Slice end ("to the end"): ONNX clamps Slice starts and ends to the
# dimension, so TensorRT's narrowing to INT32_MAX keeps their meaning.
MAX_INT64_CONSTANT_VALUES = 8
CLAMPED_INPUTS = frozenset({("Slice", 1), ("Slice", 2)})


def export_onnx(detector: Detector, path: str | Path, input_size: tuple[int, int], opset: int = ONNX_OPSET,
                dynamic_shape: bool = False) -> Path:
    """Export ``detector`` (a fused copy, on CPU) to ONNX, traced at ``input_size`` (h, w); written atomically.

    Input ``images`` float32 [batch, 3, h, w] RGB in 0..1; outputs ``cls_logits`` [batch, L, C] and
    ``reg_logits`` [batch, L, 4 * bins]. The batch axis is always dynamic (named ``batch``); with
    ``dynamic_shape`` height and width are too (``height``, ``width``: any multiples of 32).
    """
    model = copy.deepcopy(detector).cpu().eval()
    if hasattr(model, "fuse"):
        model.fuse()
    h, w = input_size
    image_axes = {0: BATCH_DIM, 2: HEIGHT_DIM, 3: WIDTH_DIM} if dynamic_shape else {0: BATCH_DIM}
    # L (anchors) follows the input size: name it too when the size is dynamic.
    out_axes = {0: BATCH_DIM, 1: "anchors"} if dynamic_shape else {0: BATCH_DIM}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            model, (torch.zeros(1, 3, h, w),), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: image_axes, **{name: out_axes for name in OUTPUT_NAMES}},
        )
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _constants(graph: Any) -> list[tuple[str, Any]]:
    """(name, TensorProto) of every initializer and Constant node's value."""
    out = [(t.name, t) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant":
            out.extend((node.output[0], a.t) for a in node.attribute if a.name == "value")
    return out


def tensorrt_problems(model: Any) -> list[str]:
    """What in an ONNX model (``onnx.ModelProto``) would keep TensorRT's ONNX parser from building an engine
    for it as it is: an empty list for a graph it takes.

    Checked: the default-domain opset is ``ONNX_OPSET``; every op is in ``TENSORRT_OPS`` and none has a
    data-dependent output shape (``DATA_DEPENDENT_OPS``: NonZero, NMS, control flow); every TopK takes its K
    from a constant; INT64 constants are shapes, axes or indices (at most ``MAX_INT64_CONSTANT_VALUES`` values,
    in int32 range but for Slice bounds, which ONNX clamps), not weights; floating-point weights are float32.
    """
    from onnx import TensorProto, numpy_helper

    problems = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != ONNX_OPSET:
        problems.append(f"opset {opsets.get('ai.onnx')} (expected {ONNX_OPSET})")
    graph = model.graph
    constant_names = {name for name, _ in _constants(graph)}
    for node in graph.node:
        if node.op_type in DATA_DEPENDENT_OPS:
            problems.append(f"{node.op_type} node {node.name!r}: its output shape depends on the data")
        elif node.op_type not in TENSORRT_OPS:
            problems.append(f"{node.op_type} node {node.name!r}: not in the ops checked against TensorRT's parser")
        if node.op_type == "TopK" and (len(node.input) < 2 or node.input[1] not in constant_names):
            problems.append(f"TopK node {node.name!r}: K is computed from the data, not a constant")
    consumers: dict[str, set[tuple[str, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, set()).add((node.op_type, slot))
    for name, tensor in _constants(graph):
        if tensor.data_type == TensorProto.INT64:
            values = numpy_helper.to_array(tensor)
            if values.size > MAX_INT64_CONSTANT_VALUES:
                problems.append(f"INT64 constant {name!r} holds {values.size} values (weights, not a shape)")
            elif (values.size and (values.min() < -2**31 or values.max() >= 2**31)
                  and not consumers.get(name, set()) <= CLAMPED_INPUTS):
                problems.append(f"INT64 constant {name!r} has values outside int32 where they are not Slice "
                                f"bounds (TensorRT's narrowing to INT32 would change them)")
        elif tensor.data_type == TensorProto.DOUBLE:
            problems.append(f"float64 constant {name!r} (TensorRT runs float32)")
    return problems
