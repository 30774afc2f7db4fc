"""The inputs a card feeds itself (constants, state), made definite before the check pass.

- **State.** A recurrent export often leaves every axis of its state dynamic except the sizes of the cell (Silero
  VAD: `state` [2, ?, 128]): the dynamic axis is the batch axis of the state, wherever it is, and the device runs
  such a model one stream at a time, so it is 1.
- **Constants.** An input fed the same value on every call is part of the model: its value is folded into the
  graph, and `If` nodes whose condition it decides are replaced by the branch taken. Exporters put such switches
  in (Silero VAD: one network for 16 kHz, one for 8 kHz, chosen by `sr == 16000`), and the branch that is never
  taken cannot take the window the card fixes (576 samples through the 8 kHz network), so no runtime would load
  the model with its shapes fixed. The folded input leaves the model, and the card in the bundle no longer lists
  it; the model is verified against the original fed the constant.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.data import Dataset
from converter.errors import ConversionError
from converter.model_info import onnx_tensor_infos
from edge_runtime.card import ModelCard
from edge_runtime.feeds import constant_value

_CONSTANT_SUFFIX = "__card_constant"


def _dims(value: onnx.ValueInfoProto) -> list:
    return list(value.type.tensor_type.shape.dim)


def _fix_state_dims(model: onnx.ModelProto, card: ModelCard) -> list[str]:
    notes = []
    for value in model.graph.input:
        if value.name not in card.state or not value.type.tensor_type.HasField("shape"):
            continue
        fixed = []
        for axis, dim in enumerate(_dims(value)):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1
                fixed.append(axis)
        if fixed:
            notes.append(f"state input '{value.name}': dynamic axis {', '.join(map(str, fixed))} fixed to 1 (one "
                         "stream at a time)")
    return notes


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_uses(attribute.g, old, new)
            for sub in attribute.graphs:
                _rename_uses(sub, old, new)


def _constant_values(graph: onnx.GraphProto, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of the graph computable from initializers and Constant nodes alone (no subgraphs)."""
    from onnx.reference import ReferenceEvaluator

    values = dict(known)
    values.update({init.name: numpy_helper.to_array(init) for init in graph.initializer})
    for node in graph.node:
        if any(attribute.type == onnx.AttributeProto.GRAPH for attribute in node.attribute):
            continue
        if not all(name in values for name in node.input if name):
            continue
        try:
            single = helper.make_model(helper.make_graph(
                [node], "fold", [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
                    values[name].dtype), values[name].shape) for name in node.input if name],
                [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in node.output]))
            results = ReferenceEvaluator(single).run(None, {name: values[name] for name in node.input if name})
        except Exception:  # an operator the reference evaluator cannot run: not constant as far as we know
            continue
        values.update(zip(node.output, (np.asarray(result) for result in results), strict=False))
    return values


def _inline_constant_ifs(graph: onnx.GraphProto, known: dict[str, np.ndarray]) -> int:
    """Replace every `If` whose condition is constant by the nodes of the branch taken; returns how many."""
    values = _constant_values(graph, known)
    inlined = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "If" or node.input[0] not in values:
            nodes.append(node)
            continue
        taken = "then_branch" if bool(np.asarray(values[node.input[0]]).reshape(-1)[0]) else "else_branch"
        branch = next(attribute.g for attribute in node.attribute if attribute.name == taken)
        inlined += 1 + _inline_constant_ifs(branch, values)
        nodes.extend(branch.node)
        graph.initializer.extend(branch.initializer)
        for inner, outer in zip(branch.output, node.output, strict=True):
            nodes.append(helper.make_node("Identity", [inner.name], [outer], name=f"{node.name}_{taken}_{outer}"))
    del graph.node[:]
    graph.node.extend(nodes)
    return inlined


def _fold_constants(model: onnx.ModelProto, card: ModelCard) -> tuple[ModelCard, list[str]]:
    """Fold the card's constants into the graph; the card returned describes the model without them."""
    inputs = {value.name: value for value in model.graph.input}
    folded = []
    known: dict[str, np.ndarray] = {}
    for name, value in card.constants.items():
        if name not in inputs:
            continue  # the input check reports it, with the card's line
        info = onnx_tensor_infos([inputs[name]])[0]
        try:
            array, per_row = constant_value(name, value, info)
        except ValueError:
            continue  # the input check reports it (wrong dtype or shape), with the card's line
        if per_row:
            continue  # a constant with a batch axis: fed by the device as it is
        constant = name + _CONSTANT_SUFFIX
        model.graph.initializer.append(numpy_helper.from_array(array, constant))
        _rename_uses(model.graph, name, constant)
        model.graph.input.remove(inputs[name])
        known[constant] = array
        folded.append(name)
    if not folded:
        return card, []
    inlined = _inline_constant_ifs(model.graph, known)
    values = ", ".join(f"{name} = {card.constants[name]}" for name in folded)
    note = f"constant input(s) {', '.join(folded)} folded into the graph ({values})"
    if inlined:
        note += f"; {inlined} If node(s) with a condition they decide replaced by the branch taken"
    notes = [note]
    remaining = {name: value for name, value in card.constants.items() if name not in folded}
    return card.model_copy(update={"constants": remaining}), notes


def prepare_declared_inputs(model: onnx.ModelProto, card: ModelCard | None) -> tuple[ModelCard | None, list[str]]:
    """Fix state dims and fold constants, in place; the card as it describes the prepared model, and notes."""
    if card is None or not (card.state or card.constants):
        return card, []
    notes = _fix_state_dims(model, card)
    card, folded = _fold_constants(model, card)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConversionError(f"folding the card's constants into the model broke it: {first}") from None
    return card, notes + folded


#: windows the folded model is compared on with the model as given (fed the constants)
FOLD_CHECK_WINDOWS = 64


def same_as_given(given: onnx.ModelProto, card: ModelCard, prepared: onnx.ModelProto, data: Dataset) -> str:
    """Run the model as given (its own shapes, the constants fed) and the prepared one on the first windows of the
    data, state carried; ConversionError if they differ, else a note saying how closely they agree."""
    from converter.runner import make_session
    from converter.sequence import run_sequence

    rows = data.subset(slice(0, FOLD_CHECK_WINDOWS))
    rows = replace(rows, sequence=data.sequence)
    constants = {name: np.asarray(value) for name, value in card.constants.items()}
    outputs = {}
    for label, model, extra in (("given", given, constants), ("prepared", prepared, {})):
        try:
            session = make_session(model)
        except Exception as exc:  # the model as given may not load in this onnxruntime at all
            return f"folded model not compared with the model as given: it does not load here ({str(exc)[:120]})"
        takes = {value.name: value.type for value in session.get_inputs()}
        names = [value.name for value in session.get_outputs()]

        def run_one(feed, session=session, names=names, takes=takes, extra=extra):
            feed = {**feed, **{name: value.astype(_numpy_type(takes[name])) for name, value in extra.items()
                               if name in takes}}
            return dict(zip(names, session.run(names, feed), strict=True))

        outputs[label] = run_sequence(run_one, rows) if rows.sequence is not None else run_one(rows.first())
    worst = max(float(np.max(np.abs(outputs["given"][name].astype(np.float64) - value.astype(np.float64)),
                             initial=0.0)) for name, value in outputs["prepared"].items())
    if not worst <= 1e-4:
        raise ConversionError(f"folding the card's constants changed the model's outputs (max difference {worst:.3g} "
                              f"on the first {len(rows)} windows); check the values under constants: in the card")
    return f"folded model matches the model as given on the first {len(rows)} windows (max difference {worst:.2g})"


def _numpy_type(onnx_type: str) -> np.dtype:
    names = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
             "tensor(double)": np.float64, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
    return np.dtype(names.get(onnx_type, np.float32))
