"""An fp16 copy of the exported float32 ONNX graph, with float32 input and outputs.

TensorRT 11 builds reduced precision only from the types written in the graph (strongly typed networks; the
``FP16`` builder flag is gone), so an fp16 engine needs an fp16 graph. The conversion runs the image path in
fp16 and keeps in float32 what is computed from shapes alone (the transformer's sine-cosine position
embedding, the attention scale): those values need float32's precision and cost nothing at run time. The
input ``images`` and the outputs ``cls_logits`` / ``reg_logits`` stay float32 (a Cast at each end), so a
backend feeds and reads the fp16 graph exactly as the float32 one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import WeightsError

# Ops whose outputs describe a tensor rather than carry its values: the image data stops there.
SHAPE_OPS = frozenset({"Shape", "Size"})
# (op, input slot) that ONNX requires in float32 whatever the data's type (Resize's roi and scales).
FLOAT32_SLOTS = frozenset({("Resize", 1), ("Resize", 2)})
FP16_SUFFIX = "__fp16"
FP16_MAX = float(np.finfo(np.float16).max)
PRECISION_KEY = "ppyoloe_sod.precision"


def convert_to_fp16(model: Any) -> Any:
    """An fp16 copy of ``model`` (``onnx.ModelProto``, float32): float32 I/O, fp16 image path, float32 shape
    arithmetic. WeightsError when a weight does not fit fp16 or the result does not type-check."""
    import onnx

    model = onnx.shape_inference.infer_shapes(_without_constant_identities(model))
    graph = model.graph
    types = _float_types(graph)
    data = {i.name for i in graph.input}
    half_nodes = set()
    for index, node in enumerate(graph.node):
        if node.op_type not in SHAPE_OPS and any(name in data for name in node.input):
            half_nodes.add(index)
            data.update(node.output)
    converter = _Converter(graph, types, data)
    nodes = []
    for index, node in enumerate(graph.node):
        if index in half_nodes:
            nodes.extend(converter.cast_inputs(node))
            _retype_casts(node)
        nodes.append(node)
    nodes.extend(converter.cast_outputs(nodes))
    del graph.node[:]
    graph.node.extend(nodes)
    converter.drop_unused_initializers()
    del graph.value_info[:]
    model.metadata_props.add(key=PRECISION_KEY, value="fp16")
    _check(model)
    return model


def _without_constant_identities(model: Any) -> Any:
    """A copy where Identity nodes over a weight are gone (their consumers read the weight), so the weights
    themselves become fp16 rather than staying float32 behind a Cast."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for slot, name in enumerate(node.input):
            if name in alias:
                node.input[slot] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _float_types(graph: Any) -> dict[str, int]:
    """Element type of every tensor whose type is known (inputs, inferred values, weights, Constant nodes)."""
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _retype_casts(node: Any) -> None:
    """A Cast to float32 on the image path casts to fp16 instead."""
    from onnx import TensorProto

    if node.op_type == "Cast":
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16


class _Converter:
    """Rewires float32 inputs of fp16 nodes: weights get fp16 copies, other float32 values a Cast."""

    def __init__(self, graph: Any, types: dict[str, int], data: set[str]):
        self.graph = graph
        self.types = types
        self.data = data
        self.weights = {t.name: t for t in graph.initializer}
        self.half: dict[str, str] = {}  # float32 name -> its fp16 counterpart
        self.input_names = {i.name for i in graph.input}

    def _is_float32(self, name: str) -> bool:
        from onnx import TensorProto

        return self.types.get(name) == TensorProto.FLOAT

    def cast_inputs(self, node: Any) -> list[Any]:
        """Point ``node``'s float32 inputs at fp16 values; returns the Cast nodes to insert before it."""
        new_nodes = []
        for slot, name in enumerate(node.input):
            if not name or not self._is_float32(name) or (node.op_type, slot) in FLOAT32_SLOTS:
                continue
            if name in self.data and name not in self.input_names:
                continue  # made by an fp16 node: already fp16
            if name not in self.half:
                new_nodes.extend(self._make_half(name))
            node.input[slot] = self.half[name]
        return new_nodes

    def _make_half(self, name: str) -> list[Any]:
        from onnx import TensorProto, helper, numpy_helper

        half_name = name + FP16_SUFFIX
        self.half[name] = half_name
        if name in self.weights:
            values = numpy_helper.to_array(self.weights[name])
            if values.size and np.abs(values).max() > FP16_MAX:
                raise WeightsError(f"weight {name!r} has values up to {np.abs(values).max():.3g}, beyond fp16's "
                                   f"{FP16_MAX:.0f}: this model cannot run in fp16; build it in fp32")
            self.graph.initializer.append(numpy_helper.from_array(values.astype(np.float16), half_name))
            return []
        return [helper.make_node("Cast", [name], [half_name], to=TensorProto.FLOAT16, name=half_name)]

    def cast_outputs(self, nodes: list[Any]) -> list[Any]:
        """Graph outputs made on the fp16 path are renamed ``*__fp16`` and cast back to their float32 name."""
        from onnx import TensorProto, helper

        casts = []
        for output in self.graph.output:
            name = output.name
            if name not in self.data or not self._is_float32(name):
                continue
            half_name = name + FP16_SUFFIX
            for node in nodes:
                node.output[:] = [half_name if o == name else o for o in node.output]
                node.input[:] = [half_name if i == name else i for i in node.input]
            casts.append(helper.make_node("Cast", [half_name], [name], to=TensorProto.FLOAT, name=name + "__cast"))
        return casts

    def drop_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _check(model: Any) -> None:
    """Full ONNX type check of the converted graph: a mixed-type node is a bug here, named before any build."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise WeightsError(f"the fp16 conversion of the ONNX graph does not type-check ({e}); build the engine "
                           f"in fp32 (--precision fp32) and report this") from None
