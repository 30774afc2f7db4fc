"""A stand-in for an Edge TPU-compiled TFLite model, which cannot be made here (edgetpu_compiler comes from Google's
apt repository, not reachable from this machine).

`edgetpu_compiler` turns the graph it can place on the TPU into one CUSTOM operator, `edgetpu-custom-op`, whose
options are the TPU's program. This writes a TFLite flatbuffer with that one operator between an input and an output
of the CPU model's shapes, and no program: what the converter checks (a TFLite file that calls the Edge TPU) and what
the daemon's fallback must cope with (a model the CPU interpreter cannot run without libedgetpu) are real; its
outputs are not, and nothing here runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import flatbuffers
import tflite as schema

from tests.support.tflite_mlp import _int_vector, _offset_vector


def edgetpu_stand_in(input_shape: Sequence[int], output_shape: Sequence[int], input_name: str = "x",
                     output_name: str = "probabilities") -> bytes:
    builder = flatbuffers.Builder(1024)
    schema.BufferStart(builder)
    buffers = _offset_vector(builder, [schema.BufferEnd(builder)])
    tensors = []
    for name, shape in ((input_name, input_shape), (output_name, output_shape)):
        name_offset, shape_offset = builder.CreateString(name), _int_vector(builder, list(shape))
        schema.TensorStart(builder)
        schema.TensorAddShape(builder, shape_offset)
        schema.TensorAddType(builder, schema.TensorType.FLOAT32)
        schema.TensorAddBuffer(builder, 0)
        schema.TensorAddName(builder, name_offset)
        tensors.append(schema.TensorEnd(builder))
    inputs, outputs = _int_vector(builder, [0]), _int_vector(builder, [1])
    schema.OperatorStart(builder)
    schema.OperatorAddOpcodeIndex(builder, 0)
    schema.OperatorAddInputs(builder, inputs)
    schema.OperatorAddOutputs(builder, outputs)
    operator = schema.OperatorEnd(builder)
    tensor_vector, operator_vector = _offset_vector(builder, tensors), _offset_vector(builder, [operator])
    graph_inputs, graph_outputs = _int_vector(builder, [0]), _int_vector(builder, [1])
    schema.SubGraphStart(builder)
    schema.SubGraphAddTensors(builder, tensor_vector)
    schema.SubGraphAddInputs(builder, graph_inputs)
    schema.SubGraphAddOutputs(builder, graph_outputs)
    schema.SubGraphAddOperators(builder, operator_vector)
    subgraph = schema.SubGraphEnd(builder)
    custom = builder.CreateString("edgetpu-custom-op")
    schema.OperatorCodeStart(builder)
    schema.OperatorCodeAddDeprecatedBuiltinCode(builder, schema.BuiltinOperator.CUSTOM)
    schema.OperatorCodeAddBuiltinCode(builder, schema.BuiltinOperator.CUSTOM)
    schema.OperatorCodeAddCustomCode(builder, custom)
    schema.OperatorCodeAddVersion(builder, 1)
    code = schema.OperatorCodeEnd(builder)
    codes, subgraphs = _offset_vector(builder, [code]), _offset_vector(builder, [subgraph])
    schema.ModelStart(builder)
    schema.ModelAddVersion(builder, 3)
    schema.ModelAddOperatorCodes(builder, codes)
    schema.ModelAddSubgraphs(builder, subgraphs)
    schema.ModelAddBuffers(builder, buffers)
    builder.Finish(schema.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
