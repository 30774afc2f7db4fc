"""A real, trained TFLite model for tests, written without TensorFlow.

The converter packages TFLite models as they are after running and verifying them, so its tests need a
``.tflite`` file whose accuracy means something: random weights would make an accuracy check vacuous.
TensorFlow is not installable here, so we train a small scikit-learn MLP on the digits data set that
scikit-learn ships (no download) and write its forward pass as a TFLite flatbuffer by hand, with the
``flatbuffers`` builder and the generated schema code of the ``tflite`` package.

The writer is generic (any stack of dense layers) so other tests can build their own small models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import tflite as schema
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

# (weights [in, out] as in ``x @ W + b``, bias [out], activation). The activation is one of ``ACTIVATIONS``.
Layer = tuple[np.ndarray, np.ndarray, str]

# Activations a FULLY_CONNECTED can fuse, by the names scikit-learn uses where it has one.
_FUSED = {
    "identity": schema.ActivationFunctionType.NONE,
    "relu": schema.ActivationFunctionType.RELU,
    "relu6": schema.ActivationFunctionType.RELU6,
}
# "softmax" is not fusable: it becomes a FULLY_CONNECTED without activation followed by a SOFTMAX operator.
ACTIVATIONS = (*_FUSED, "softmax")

# TFLite's schema version; the runtime refuses any other.
_SCHEMA_VERSION = 3
# The TF converter aligns constant buffers to 16 bytes so kernels may read them in place; do the same.
_BUFFER_ALIGNMENT = 16

DIGITS_FEATURES = 64
DIGITS_LABELS = [str(digit) for digit in range(10)]
CALIBRATION_ROWS = 256


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed train/test split of the digits data, features already scaled to [0, 1]."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_digits_split(split_seed: int = 0) -> DigitsSplit:
    """Scaled digits features (pixel / 16) and a stratified 75/25 split, so every class is in both halves."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=split_seed
    )
    return DigitsSplit(x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)


def train_digits_mlp(seed: int = 0, hidden: Sequence[int] = (32,)) -> tuple[MLPClassifier, DigitsSplit]:
    """Train a ReLU MLP on digits; the split is always seed 0 so only the weights depend on ``seed``.

    Takes about half a second. Test accuracy is 0.973 for seed 0 (0.96-0.975 over seeds 0-2).
    """
    split = load_digits_split()
    classifier = MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        activation="relu",
        # Default tolerance converges in ~400 epochs without a ConvergenceWarning; 1000 is headroom.
        max_iter=1000,
        random_state=seed,
    )
    classifier.fit(split.x_train, split.y_train)
    return classifier, split


def mlp_layers(classifier: MLPClassifier) -> list[Layer]:
    """The classifier's layers in ``write_tflite_mlp`` form, ending in the activation it predicts with."""
    if classifier.out_activation_ != "softmax":
        # Binary (logistic) and multilabel classifiers would need a LOGISTIC op; not needed by the tests.
        raise ValueError(f"only softmax classifiers are supported, got {classifier.out_activation_!r}")
    if classifier.activation not in _FUSED:
        raise ValueError(f"hidden activation {classifier.activation!r} cannot be fused into FULLY_CONNECTED")
    count = len(classifier.coefs_)
    return [
        (weights, bias, classifier.activation if index < count - 1 else classifier.out_activation_)
        for index, (weights, bias) in enumerate(zip(classifier.coefs_, classifier.intercepts_, strict=True))
    ]


def _aligned_bytes(builder: flatbuffers.Builder, data: bytes) -> int:
    """A ``[ubyte]`` vector whose payload starts on a 16-byte boundary (``CreateByteVector`` aligns to 4)."""
    builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
    builder.head -= len(data)
    builder.Bytes[builder.head : builder.head + len(data)] = data
    return builder.EndVector()


def _int_vector(builder: flatbuffers.Builder, values: Sequence[int]) -> int:
    """An ``[int]`` vector: shapes, shape signatures, operator and subgraph tensor indices."""
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def _offset_vector(builder: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    """A vector of tables (already written, referenced by offset)."""
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    signature: list[int]
    buffer: int


def build_tflite_mlp(
    layers: Sequence[Layer],
    *,
    input_name: str = "x",
    output_name: str = "probabilities",
    dynamic_batch: bool = True,
    description: str = "MLP written by tests/support/tflite_mlp.py",
) -> bytes:
    """The bytes of a float32 TFLite model computing ``layers`` on a ``[1, features]`` input.

    Each layer is ``(weights [in, out], bias [out], activation)``, i.e. ``activation(x @ weights + bias)``
    as scikit-learn and numpy write it; the weights are transposed here because FULLY_CONNECTED wants
    ``[out, in]``. With ``dynamic_batch`` every activation tensor has shape signature ``[-1, n]`` so
    ``resize_tensor_input`` can change the batch; the stored shape stays ``[1, n]`` as TF writes it.
    """
    if not layers:
        raise ValueError("need at least one layer")
    for index, (weights, bias, activation) in enumerate(layers):
        if activation not in ACTIVATIONS:
            raise ValueError(f"layer {index}: activation {activation!r} is not one of {ACTIVATIONS}")
        if activation == "softmax" and index != len(layers) - 1:
            raise ValueError(f"layer {index}: softmax is only supported on the last layer")
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ValueError(f"layer {index}: weights {weights.shape} do not match bias {bias.shape}")
        previous = layers[index - 1][0].shape[1] if index else weights.shape[0]
        if weights.shape[0] != previous:
            raise ValueError(
                f"layer {index}: takes {weights.shape[0]} inputs, the layer before gives {previous}"
            )

    batch = -1 if dynamic_batch else 1
    # buffers[0] is the empty sentinel every tensor without constant data points at.
    buffers: list[bytes] = [b""]
    tensors: list[_Tensor] = []

    def add_tensor(
        name: str, shape: Sequence[int], data: np.ndarray | None = None, batched: bool = False
    ) -> int:
        buffer = 0
        if data is not None:
            buffers.append(np.ascontiguousarray(data, dtype="<f4").tobytes())
            buffer = len(buffers) - 1
        signature = [batch, *shape[1:]] if batched else list(shape)
        tensors.append(_Tensor(name=name, shape=list(shape), signature=signature, buffer=buffer))
        return len(tensors) - 1

    # (builtin operator, inputs, outputs, fused activation or None for SOFTMAX)
    operators: list[tuple[int, list[int], list[int], int | None]] = []
    fully_connected, softmax = schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX
    current = add_tensor(input_name, [1, layers[0][0].shape[0]], batched=True)
    graph_input = current
    for index, (weights, bias, activation) in enumerate(layers):
        units = weights.shape[1]
        last = index == len(layers) - 1
        kernel = add_tensor(f"dense_{index}/weights", [units, weights.shape[0]], data=np.asarray(weights).T)
        offset = add_tensor(f"dense_{index}/bias", [units], data=np.asarray(bias))
        fused = _FUSED.get(activation, schema.ActivationFunctionType.NONE)
        dense_name = output_name if last and activation != "softmax" else f"dense_{index}/out"
        dense = add_tensor(dense_name, [1, units], batched=True)
        operators.append((fully_connected, [current, kernel, offset], [dense], fused))
        current = dense
        if activation == "softmax":
            probabilities = add_tensor(output_name, [1, units], batched=True)
            operators.append((softmax, [current], [probabilities], None))
            current = probabilities
    graph_output = current

    builder = flatbuffers.Builder(4096)

    # Strings, vectors and leaf tables first: flatbuffers cannot nest the writing of tables.
    buffer_offsets = []
    for data in buffers:
        data_offset = _aligned_bytes(builder, data) if data else None
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        buffer_offsets.append(schema.BufferEnd(builder))

    tensor_offsets = []
    for tensor in tensors:
        name = builder.CreateString(tensor.name)
        shape = _int_vector(builder, tensor.shape)
        signature = _int_vector(builder, tensor.signature) if tensor.signature != tensor.shape else None
        schema.TensorStart(builder)
        schema.TensorAddShape(builder, shape)
        if signature is not None:
            schema.TensorAddShapeSignature(builder, signature)
        schema.TensorAddType(builder, schema.TensorType.FLOAT32)
        schema.TensorAddBuffer(builder, tensor.buffer)
        schema.TensorAddName(builder, name)
        tensor_offsets.append(schema.TensorEnd(builder))

    # The model's operator_codes table lists each operator used once; operators refer to it by index.
    codes = list(dict.fromkeys(code for code, *_ in operators))
    operator_offsets = []
    for code, inputs, outputs, fused in operators:
        input_vector = _int_vector(builder, inputs)
        output_vector = _int_vector(builder, outputs)
        if fused is None:
            schema.SoftmaxOptionsStart(builder)
            schema.SoftmaxOptionsAddBeta(builder, 1.0)
            options = schema.SoftmaxOptionsEnd(builder)
            options_type = schema.BuiltinOptions.SoftmaxOptions
        else:
            schema.FullyConnectedOptionsStart(builder)
            schema.FullyConnectedOptionsAddFusedActivationFunction(builder, fused)
            options = schema.FullyConnectedOptionsEnd(builder)
            options_type = schema.BuiltinOptions.FullyConnectedOptions
        schema.OperatorStart(builder)
        schema.OperatorAddOpcodeIndex(builder, codes.index(code))
        schema.OperatorAddInputs(builder, input_vector)
        schema.OperatorAddOutputs(builder, output_vector)
        schema.OperatorAddBuiltinOptionsType(builder, options_type)
        schema.OperatorAddBuiltinOptions(builder, options)
        operator_offsets.append(schema.OperatorEnd(builder))

    subgraph_tensors = _offset_vector(builder, tensor_offsets)
    subgraph_inputs = _int_vector(builder, [graph_input])
    subgraph_outputs = _int_vector(builder, [graph_output])
    subgraph_operators = _offset_vector(builder, operator_offsets)
    subgraph_name = builder.CreateString("main")
    schema.SubGraphStart(builder)
    schema.SubGraphAddTensors(builder, subgraph_tensors)
    schema.SubGraphAddInputs(builder, subgraph_inputs)
    schema.SubGraphAddOutputs(builder, subgraph_outputs)
    schema.SubGraphAddOperators(builder, subgraph_operators)
    schema.SubGraphAddName(builder, subgraph_name)
    subgraph = schema.SubGraphEnd(builder)

    opcode_offsets = []
    for code in codes:
        schema.OperatorCodeStart(builder)
        # Codes below 127 go in both fields: old readers only look at deprecated_builtin_code.
        schema.OperatorCodeAddDeprecatedBuiltinCode(builder, code)
        schema.OperatorCodeAddBuiltinCode(builder, code)
        schema.OperatorCodeAddVersion(builder, 1)
        opcode_offsets.append(schema.OperatorCodeEnd(builder))

    # A signature makes the model usable through get_signature_runner() as TF-converted models are.
    signature_maps = []
    for names in ([(input_name, graph_input)], [(output_name, graph_output)]):
        maps = []
        for name, tensor_index in names:
            key = builder.CreateString(name)
            schema.TensorMapStart(builder)
            schema.TensorMapAddName(builder, key)
            schema.TensorMapAddTensorIndex(builder, tensor_index)
            maps.append(schema.TensorMapEnd(builder))
        signature_maps.append(_offset_vector(builder, maps))
    signature_key = builder.CreateString("serving_default")
    schema.SignatureDefStart(builder)
    schema.SignatureDefAddInputs(builder, signature_maps[0])
    schema.SignatureDefAddOutputs(builder, signature_maps[1])
    schema.SignatureDefAddSignatureKey(builder, signature_key)
    schema.SignatureDefAddSubgraphIndex(builder, 0)
    signature_def = schema.SignatureDefEnd(builder)

    model_opcodes = _offset_vector(builder, opcode_offsets)
    model_subgraphs = _offset_vector(builder, [subgraph])
    model_buffers = _offset_vector(builder, buffer_offsets)
    model_signatures = _offset_vector(builder, [signature_def])
    model_description = builder.CreateString(description)
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, _SCHEMA_VERSION)
    schema.ModelAddOperatorCodes(builder, model_opcodes)
    schema.ModelAddSubgraphs(builder, model_subgraphs)
    schema.ModelAddDescription(builder, model_description)
    schema.ModelAddBuffers(builder, model_buffers)
    schema.ModelAddSignatureDefs(builder, model_signatures)
    model = schema.ModelEnd(builder)
    builder.Finish(model, file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_tflite_mlp(
    classifier: MLPClassifier | Sequence[Layer],
    path: Path,
    *,
    input_name: str = "x",
    output_name: str = "probabilities",
    dynamic_batch: bool = True,
) -> Path:
    """Write a fitted ``MLPClassifier`` (or explicit layers) as ``path``; see ``build_tflite_mlp``."""
    layers = mlp_layers(classifier) if isinstance(classifier, MLPClassifier) else list(classifier)
    path = Path(path)
    path.write_bytes(
        build_tflite_mlp(layers, input_name=input_name, output_name=output_name, dynamic_batch=dynamic_batch)
    )
    return path


def digits_card(name: str = "digits_mlp") -> dict:
    """A model card (as ``card.yaml`` data) for the digits MLP.

    The features are the model-ready pixel / 16 values the npz files hold, so the card has no ``normalize``.
    """
    return {
        "name": name,
        "version": "1",
        "description": "8x8 handwritten digits (scikit-learn), pixels scaled to [0, 1]; MLP 64-32-10",
        "labels": DIGITS_LABELS,
        "input": {"kind": "features", "name": "x", "features": DIGITS_FEATURES},
        "output": {"kind": "classification", "name": "probabilities", "scores": "probabilities"},
    }


def build_tflite_digits_sample(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Train the digits MLP and write model, card, calibration and eval data into ``out_dir``.

    Returns paths under the keys ``model``, ``card``, ``calibration`` and ``eval``. Nothing is cached:
    training takes about a second and a cache could hide a writer change.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier, split = train_digits_mlp(seed)
    paths = {
        "model": out_dir / "digits_mlp.tflite",
        "card": out_dir / "digits_mlp.card.yaml",
        "calibration": out_dir / "digits_mlp.calibration.npz",
        "eval": out_dir / "digits_mlp.eval.npz",
    }
    write_tflite_mlp(classifier, paths["model"])
    paths["card"].write_text(yaml.safe_dump(digits_card(), sort_keys=False))
    np.savez(
        paths["calibration"],
        x=split.x_train[:CALIBRATION_ROWS].astype(np.float32),
        y=split.y_train[:CALIBRATION_ROWS].astype(np.int64),
    )
    np.savez(paths["eval"], x=split.x_test.astype(np.float32), y=split.y_test.astype(np.int64))
    return paths
