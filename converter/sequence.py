"""Models with several inputs described by the card: constants fed on every call, state carried over sequences.

The user's data holds only what is streamed (the npz's array for the card's input, or a folder of WAV files);
constants come from the card, and the state inputs of a recurrent model are produced by running it over each
recording in order, as the device will (edge_runtime/feeds.py makes the feeds on both sides). So every stage is
verified over whole recordings with its own state carried, not on single frames, and int8 is calibrated on the
state inputs as they occur (`record_states`: the original model's states, collected by running it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from converter.audio_data import load_wav_folder
from converter.data import Dataset, Sequence, fit_input, read_npz
from converter.errors import ConversionError
from converter.model_info import TensorInfo
from edge_runtime.card import AudioInput, ModelCard
from edge_runtime.feeds import CardMismatch, InputPlan, plan_inputs, stack_outputs
from edge_runtime.yaml_source import read_yaml

RunOne = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
#: optional npz array: a recording id per row; the state starts over where it changes
RECORDING_KEY = "recording"


def needs_plan(card: ModelCard | None, path: Path) -> bool:
    """Data read through the card: a folder of recordings, or a model with constants or state (a folder for an
    image model is a folder of images, read by converter/image_data.py)."""
    if card is None:  # a folder without a card: the image-folder reader says what it needs
        return False
    if card.input.kind == "image":
        return bool(card.constants or card.state)
    return path.is_dir() or (card is not None and bool(card.constants or card.state))


def card_problems(card_path: Path | None, mismatch: CardMismatch) -> ConversionError:
    """One `[card.yaml:LINE] message` line per problem, as the card loader reports its own."""
    lines = read_yaml(card_path)[1] if card_path is not None and card_path.is_file() else {}
    rendered = []
    for loc, message in mismatch.problems:
        line = next((lines[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in lines), None)
        where = f"{card_path}:{line}" if line else str(card_path or "card")
        rendered.append(f"[{where}] {message}")
    return ConversionError("the card does not describe the model's inputs: " + "; ".join(rendered))


def plan_for(card: ModelCard, card_path: Path | None, inputs: list[TensorInfo],
             outputs: list[TensorInfo]) -> InputPlan:
    try:
        return plan_inputs(card, inputs, outputs)
    except CardMismatch as mismatch:
        raise card_problems(card_path, mismatch) from None


def load_stream_data(path: Path, card: ModelCard, plan: InputPlan, inputs: list[TensorInfo], *, what: str,
                     notes: list[str]) -> Dataset:
    """The streamed input from an npz or a WAV folder, plus the card's constants; state comes later (record_states)."""
    info = next(item for item in inputs if item.name == plan.streamed)
    labels = None
    if path.is_dir():
        if not isinstance(card.input, AudioInput):
            raise ConversionError(f"{what} data {path} is a folder: folders hold WAV recordings for audio models "
                                  f"(card input kind: audio); this card's input is {card.input.kind}")
        rows, starts, names = load_wav_folder(path, card.input, what)
        rows = fit_input(path, info, rows)
        notes.append(f"{what}: {len(names)} WAV recording(s), {len(rows)} windows of {card.input.window} samples "
                     f"at {card.input.rate_hz} Hz" + (f" as {card.input.features.type}" if card.input.features else ""))
    elif not path.is_file():
        raise ConversionError(f"{what} data not found: {path}")
    else:
        arrays = read_npz(path)
        key = plan.streamed if plan.streamed in arrays else "x" if "x" in arrays else None
        if key is None:
            raise ConversionError(f"{path}: no array for the streamed input '{plan.streamed}' (or 'x'); the file "
                                  f"has: {', '.join(sorted(arrays)) or 'none'}")
        derived = sorted(set(arrays) & (set(plan.constants) | {slot.input for slot in plan.state}))
        if derived:
            notes.append(f"{what}: array(s) {', '.join(derived)} ignored: constants come from the card, state from "
                         "running the model over the sequence")
        known = {key, "y", RECORDING_KEY, *derived}
        unknown = sorted(set(arrays) - known)
        if unknown:
            raise ConversionError(f"{path}: arrays {', '.join(unknown)} match no model input; the card streams "
                                  f"'{plan.streamed}' and feeds the others itself")
        rows = fit_input(path, info, arrays[key])
        ids = arrays.get(RECORDING_KEY)
        if ids is not None and ids.shape != (len(rows),):
            raise ConversionError(f"{path}: '{RECORDING_KEY}' needs one id per row ({len(rows)}), got "
                                  f"{list(ids.shape)}")
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids is not None else np.zeros(1, np.int64)
        names = [f"{path.name}#{index}" for index in range(len(starts))]
        labels = arrays.get("y")
        if labels is not None and (labels.ndim != 1 or len(labels) != len(rows) or labels.dtype.kind not in "iu"):
            raise ConversionError(f"{path}: 'y' must hold one integer label per row ({len(rows)})")
    inputs_by_row = {plan.streamed: rows}
    constants = {}
    for name, value in plan.constants.items():  # a constant with a batch axis becomes a column of the data
        if name in plan.batched_constants:
            inputs_by_row[name] = np.ascontiguousarray(np.broadcast_to(value, (len(rows), *value.shape)))
        else:
            constants[name] = value
    sequence = Sequence(plan, starts, names) if plan.stateful else None
    return Dataset(inputs_by_row, labels, str(path), constants=constants, sequence=sequence)


def run_sequence(run_one: RunOne, dataset: Dataset, advance: Callable[[int], None] | None = None,
                 fed: dict[str, list[np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Every output over the data set's recordings in order, one window per call, the model's own state carried
    from call to call and started over (zeros) at each recording. `fed` collects the state inputs fed."""
    sequence = dataset.sequence
    assert sequence is not None
    starts = set(sequence.starts.tolist())
    state: dict[str, np.ndarray] | None = None
    collected: dict[str, list[np.ndarray]] = {}
    for index, feed in enumerate(dataset.batches(1)):
        if state is None or index in starts:
            state = sequence.plan.initial_state()
        feed = {**feed, **state}
        if fed is not None:
            for name, value in state.items():
                fed.setdefault(name, []).append(value)
        outputs = run_one(feed)
        state = sequence.plan.next_state(outputs)
        for name, value in outputs.items():
            collected.setdefault(name, []).append(np.asarray(value))
        if advance:
            advance(1)
    return {name: stack_outputs(parts) for name, parts in collected.items()}


def record_states(dataset: Dataset | None, run_one: RunOne) -> Dataset | None:
    """The data set with the state inputs the original model produced over each recording, one full state tensor
    per row: what the calibrator and any out-of-order use of the rows (subsets) are fed."""
    if dataset is None or dataset.sequence is None:
        return dataset
    fed: dict[str, list[np.ndarray]] = {}
    run_sequence(run_one, dataset, fed=fed)
    states = {name: np.stack(values) for name, values in fed.items()}
    return replace(dataset, inputs={**dataset.inputs, **states}, unbatched=dataset.unbatched | set(states))


def value_errors(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max, mean) absolute difference of two outputs over every window."""
    difference = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    return (float(difference.max()), float(difference.mean())) if difference.size else (0.0, 0.0)

