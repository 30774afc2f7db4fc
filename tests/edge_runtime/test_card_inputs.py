"""The card describes every model input exactly once (streamed, constant or state): what is uncovered or unknown is
named, constants are cast to the model input's dtype (an int64 scalar sample rate), and a card that contradicts
itself is refused with the file and line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.feeds import CardMismatch, plan_inputs
from edge_runtime.yaml_source import ConfigError, load_model


def tensor(name: str, shape: list, dtype: str = "float32") -> SimpleNamespace:
    return SimpleNamespace(name=name, shape=shape, dtype=dtype)


# Silero VAD v5 as its exporter wrote it (onnx.load of the model): audio, recurrent state, int64 scalar rate
SILERO_INPUTS = [tensor("input", [None, None]), tensor("state", [2, None, 128]), tensor("sr", [], "int64")]
SILERO_OUTPUTS = [tensor("output", [None, 1]), tensor("stateN", [None, None, None])]


def card(**changes) -> ModelCard:
    document = {"name": "vad", "input": {"kind": "audio", "name": "input", "rate_hz": 16000, "window": 576,
                                         "hop": 512},
                "constants": {"sr": 16000}, "state": {"state": "stateN"},
                "output": {"kind": "regression", "name": "output", "threshold": 0.5}}
    document.update(changes)
    return ModelCard.model_validate(document)


def problems(model_card: ModelCard) -> list[tuple[tuple, str]]:
    with pytest.raises(CardMismatch) as error:
        plan_inputs(model_card, SILERO_INPUTS, SILERO_OUTPUTS)
    return error.value.problems


def test_the_silero_card_covers_every_input():
    plan = plan_inputs(card(), SILERO_INPUTS, SILERO_OUTPUTS)
    assert plan.streamed == "input" and plan.stateful
    assert plan.constants["sr"].dtype == np.int64 and plan.constants["sr"].shape == () and plan.constants["sr"] == 16000
    (slot,) = plan.state
    assert (slot.input, slot.output, slot.initial.shape, slot.initial.dtype) == ("state", "stateN", (2, 1, 128),
                                                                                np.float32)
    feed = plan.feed(np.zeros((1, 576), np.float32))
    assert sorted(feed) == ["input", "sr", "state"] and not feed["state"].any()


def test_a_constant_that_is_not_a_number_is_one_line(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text("name: vad\ninput: {kind: audio, name: input, rate_hz: 16000, window: 576, hop: 512}\n"
                    "constants: {sr: 16k}\n")
    with pytest.raises(ConfigError) as error:
        load_model(path, ModelCard)
    assert error.value.problems == [f"[{path}:3] constants: Value error, constants.sr: '16k' is not a number or a "
                                    "list of numbers"]


def test_an_uncovered_input_is_named():
    [(where, message)] = problems(card(constants={}))
    assert "model input 'sr' is not described by the card" in message
    assert where == ("state",)


def test_an_unknown_state_output_is_named():
    [(where, message)] = problems(card(state={"state": "hidden"}))
    assert where == ("state", "state")
    assert "no output 'hidden'" in message and "output, stateN" in message


def test_unknown_inputs_are_named():
    found = problems(card(constants={"sr": 16000, "rate": 1}, input={
        "kind": "audio", "name": "audio", "rate_hz": 16000, "window": 576, "hop": 512}))
    messages = [message for _, message in found]
    assert messages == ["constants.rate: the model has no input 'rate' (it takes: input, state, sr)",
                        "the card's input 'audio' is not an input of the model (it takes: input, state, sr)"]


@pytest.mark.parametrize(("value", "message"), [
    (16000.5, "not a whole number, but model input 'sr' is int64"),
    (3e20, "does not fit"),
    ([16000, 8000], "value has shape [2] but model input 'sr' is []"),
])
def test_a_constant_must_fit_the_model_inputs_dtype_and_shape(value, message):
    [(where, found)] = problems(card(constants={"sr": value}))
    assert where == ("constants", "sr") and message in found


def test_a_scalar_constant_fills_a_fixed_shape_and_a_batched_one_gets_a_row_per_window():
    inputs = [tensor("x", ["batch", 4]), tensor("gain", [1], "float32"), tensor("rate", ["batch", 1], "int32")]
    model_card = ModelCard.model_validate({"name": "m", "input": {"kind": "audio", "name": "x", "rate_hz": 8,
                                                                  "window": 4, "hop": 4},
                                           "constants": {"gain": 2, "rate": [8]}})
    plan = plan_inputs(model_card, inputs, [tensor("y", ["batch", 1])])
    feed = plan.feed(np.zeros((3, 4), np.float32))
    assert feed["gain"].tolist() == [2.0] and feed["rate"].shape == (3, 1) and feed["rate"].dtype == np.int32


def test_the_streamed_input_is_the_one_left_when_the_card_names_none():
    model_card = card(input={"kind": "audio", "rate_hz": 16000, "window": 576, "hop": 512})
    assert plan_inputs(model_card, SILERO_INPUTS, SILERO_OUTPUTS).streamed == "input"


def test_a_state_that_does_not_fit_its_input_is_refused():
    outputs = [tensor("output", [None, 1]), tensor("stateN", [2, 1, 64])]
    with pytest.raises(CardMismatch, match=r"output 'stateN' is \[2, 1, 64\] but input 'state' is \[2, \?, 128\]"):
        plan_inputs(card(), SILERO_INPUTS, outputs)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("state: {input: stateN}\n", 7, "input 'input' is both the streamed input and a state input"),
    ("constants: {input: 1}\n", 7, "input 'input' is both the streamed input and a constant"),
    ("constants: {sr: 16000}\nstate: {sr: stateN}\n", 8, "input 'sr' is both a constant and a state input"),
    ("state: {a: stateN, b: stateN}\n", 7, "output 'stateN' feeds more than one state input"),
    ("output: {kind: classification, threshold: 0.5}\n", 7, "threshold goes with kind: regression"),
])
def test_a_card_that_contradicts_itself_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "card.yaml"
    path.write_text("name: vad\ninput: {kind: audio, name: input, rate_hz: 16000, window: 576, hop: 512}\n"
                    + "\n" * 4 + text)
    with pytest.raises(ConfigError) as error:
        load_model(path, ModelCard)
    [problem] = error.value.problems
    assert problem.startswith(f"[{path}:{line}]") and message in problem
