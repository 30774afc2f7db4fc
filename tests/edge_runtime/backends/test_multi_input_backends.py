"""Several inputs of any dtype through both backends: an int64 scalar next to float audio and a state tensor whose
batch axis is not axis 0. onnxruntime runs the accumulator graph of tests/support/stateful_model.py; the TFLite
path is checked on what it hands the interpreter (a stand-in interpreter records every set_tensor), since a
multi-input .tflite cannot be written here without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.backends.onnxruntime import open_backend as open_onnxruntime
from edge_runtime.backends.tflite import TfliteModel, _details
from edge_runtime.board import load_board
from tests.support.stateful_model import build_accumulator


def test_onnxruntime_feeds_each_input_its_own_dtype():
    backend = open_onnxruntime(build_accumulator().SerializeToString(), OnnxRuntimeBackendConfig(type="onnxruntime"),
                               load_board("x86_64"))
    # a Python int and float64 arrays: each is cast to the model input's dtype (int64 scalar, float32)
    outputs = backend.run({"x": np.array([[1.0, 2.0, 3.0, 4.0]]), "state": np.array([[0.5]]), "k": 2})
    assert outputs["y"].tolist() == [[20.5]] and outputs["stateN"].tolist() == [[20.5]]
    backend.close()


class RecordingInterpreter:
    """What TfliteModel uses of a LiteRT interpreter, recording what it is given."""

    def __init__(self, inputs: list[dict], outputs: list[dict]):
        self.inputs, self.outputs = inputs, outputs
        self.set: list[tuple[int, np.ndarray]] = []
        self.resized: list[tuple[int, list[int]]] = []
        self.invocations = 0

    def get_input_details(self):
        return self.inputs

    def get_output_details(self):
        return self.outputs

    def allocate_tensors(self):
        pass

    def resize_tensor_input(self, index, shape, strict=True):
        self.resized.append((index, list(shape)))

    def set_tensor(self, index, value):
        self.set.append((index, np.array(value)))

    def invoke(self):
        self.invocations += 1

    def get_tensor(self, index):
        return np.full((1, 1), 7, dtype=np.int32) if index == 10 else np.ones((1, 1), np.float32)


def detail(name, index, shape, dtype, quantization=(0.0, 0)) -> dict:
    return {"name": name, "index": index, "shape": np.array(shape), "shape_signature": np.array(shape),
            "dtype": dtype, "quantization": quantization}


@pytest.fixture
def interpreter() -> RecordingInterpreter:
    return RecordingInterpreter(
        [detail("audio", 0, [1, 4], np.int8, (0.5, 3)), detail("state", 1, [2, 1, 3], np.float32),
         detail("sr", 2, [], np.int64)],
        [detail("count", 10, [1, 1], np.int32), detail("score", 11, [1, 1], np.float32)])


def tflite_model(interpreter: RecordingInterpreter) -> TfliteModel:
    model = TfliteModel.__new__(TfliteModel)
    model.interpreter, model.package = interpreter, "stand-in"
    model.inputs = [_details(raw) for raw in interpreter.get_input_details()]
    model.outputs = [_details(raw) for raw in interpreter.get_output_details()]
    model._batch = 1
    return model


def test_tflite_sets_each_input_in_its_own_dtype(interpreter):
    model = tflite_model(interpreter)
    count, score = model.run({"audio": np.array([[1.0, -1.0, 0.0, 2.0]], np.float32),
                              "state": np.zeros((2, 1, 3), np.float32), "sr": np.array(16000, np.int64)})
    audio, state, sr = (value for _, value in interpreter.set)
    assert audio.dtype == np.int8 and audio.tolist() == [[5, 1, 3, 7]]  # quantized with its scale and zero point
    assert state.dtype == np.float32 and state.shape == (2, 1, 3)
    assert sr.dtype == np.int64 and sr.shape == () and int(sr) == 16000  # not through float32
    assert count.dtype == np.int32 and count.tolist() == [[7]]  # an integer output keeps its dtype
    assert interpreter.resized == []  # nothing to resize: the batch is 1


def test_tflite_runs_a_bigger_batch_row_by_row_and_keeps_unbatched_inputs_whole(interpreter):
    model = tflite_model(interpreter)
    count, _ = model.run({"audio": np.zeros((3, 4), np.float32), "state": np.zeros((2, 1, 3), np.float32),
                          "sr": np.array(8000, np.int64)})
    assert interpreter.invocations == 3 and count.shape == (3, 1)
    by_index = {}
    for index, value in interpreter.set:
        by_index.setdefault(index, []).append(value.shape)
    assert by_index == {0: [(1, 4)] * 3, 1: [(2, 1, 3)] * 3, 2: [()] * 3}
