"""Every model input fed on every call: the streamed input, constants from the card, state carried per stream.

A model card describes each model input exactly once: the one streamed input (`input:`: sensor window, image,
audio), a constant (`constants: {sr: 16000}`, cast to the model input's dtype, scalars included), or a state
input (`state: {state: stateN}`: fed the named output of the previous call of the same stream, zeros at first).
`plan_inputs` checks that against the model's inputs and outputs and says, per card key, what does not fit; the
converter turns those keys into `[card.yaml:LINE]` messages, the device into one line per bundle.

`StreamState` carries the state of one stream between calls and starts it over (zeros) after a gap in the
stream's timestamps, or when time goes back: a recurrent model must not continue a sentence that ended minutes
ago as if nothing had happened in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_runtime.card import ModelCard

Dim = int | str | None

#: default state reset: a gap between two windows of a stream longer than this many hops
STATE_GAP_HOPS = 4


class TensorLike(Protocol):
    name: str
    shape: Sequence[Dim]
    dtype: str


class CardMismatch(ValueError):
    """The card does not describe the model's inputs; `problems` are (card key path, message) pairs."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def _fixed(dim: Dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _shape_text(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(dim) if _fixed(dim) else "?" for dim in shape) + "]"


def constant_value(name: str, value: Any, spec: TensorLike) -> tuple[np.ndarray, bool]:
    """The card's value as the model input's dtype and shape, and whether it gets a batch axis per call."""
    dtype = np.dtype(spec.dtype)
    given = np.asarray(value)
    if given.dtype.kind not in "biuf":
        raise ValueError(f"{value!r} is not a number or a list of numbers")
    if dtype.kind in "iu":
        if given.dtype.kind == "f" and not np.array_equal(given, np.round(given)):
            raise ValueError(f"{value!r} is not a whole number, but model input '{name}' is {dtype.name}")
        info = np.iinfo(dtype)
        if given.size and (given.min() < info.min or given.max() > info.max):
            raise ValueError(f"{value!r} does not fit model input '{name}' ({dtype.name})")
    elif dtype.kind == "b" and not np.isin(given, (0, 1)).all():
        raise ValueError(f"{value!r} is not a boolean, but model input '{name}' is bool")
    elif dtype.kind not in "fb":
        raise ValueError(f"model input '{name}' is {dtype.name}: constants must be numbers")
    shape = list(spec.shape)
    batched = bool(shape) and not _fixed(shape[0]) and len(shape) == given.ndim + 1
    row = shape[1:] if batched else shape
    if given.ndim == 0 and all(_fixed(dim) for dim in row):
        array = np.full([int(dim) for dim in row], given, dtype=dtype)
    elif given.ndim == len(row) and all(not _fixed(d) or d == g for d, g in zip(row, given.shape, strict=True)):
        array = given.astype(dtype)
    else:
        raise ValueError(f"value has shape {list(given.shape)} but model input '{name}' is {_shape_text(shape)}")
    return array, batched


@dataclass(frozen=True)
class StateSlot:
    """One state input, the output that feeds it, and its value at the start of a stream."""

    input: str
    output: str
    initial: np.ndarray


@dataclass(frozen=True)
class InputPlan:
    """How one call's inputs are made: the streamed batch plus constants, plus state for a stateful model."""

    streamed: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    batched_constants: frozenset[str] = frozenset()  # constants with a per-row batch axis
    state: tuple[StateSlot, ...] = ()

    @property
    def stateful(self) -> bool:
        return bool(self.state)

    def initial_state(self) -> dict[str, np.ndarray]:
        return {slot.input: slot.initial.copy() for slot in self.state}

    def feed(self, streamed: np.ndarray, state: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The full feed for one call: `streamed` is batch first; state (one stream) only with batch 1."""
        feed = {self.streamed: streamed}
        rows = len(streamed)
        for name, value in self.constants.items():
            feed[name] = np.broadcast_to(value, (rows, *value.shape)) if name in self.batched_constants else value
        if self.state:
            if rows != 1:
                raise ValueError(f"a stateful model runs one window at a time, got a batch of {rows}")
            feed.update(state if state is not None else self.initial_state())
        return feed

    def next_state(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The state inputs of the next call, from this call's outputs (shape and dtype of the inputs)."""
        return {slot.input: np.asarray(outputs[slot.output], dtype=slot.initial.dtype).reshape(slot.initial.shape)
                for slot in self.state}


def plan_inputs(card: ModelCard, inputs: Sequence[TensorLike], outputs: Sequence[TensorLike]) -> InputPlan:
    """Check that the card describes every model input exactly once; CardMismatch lists what does not fit."""
    by_name = {spec.name: spec for spec in inputs}
    output_names = [spec.name for spec in outputs]
    outputs_by_name = {spec.name: spec for spec in outputs}
    takes = ", ".join(by_name)
    problems: list[tuple[tuple[str, ...], str]] = []
    constants: dict[str, np.ndarray] = {}
    batched: set[str] = set()
    for name, value in card.constants.items():
        if name not in by_name:
            problems.append((("constants", name), f"constants.{name}: the model has no input '{name}' (it takes: "
                                                  f"{takes})"))
            continue
        try:
            constants[name], per_row = constant_value(name, value, by_name[name])
        except ValueError as exc:
            problems.append((("constants", name), f"constants.{name}: {exc}"))
            continue
        if per_row:
            batched.add(name)
    slots = []
    for name, output in card.state.items():
        if name not in by_name:
            problems.append((("state", name), f"state.{name}: the model has no input '{name}' (it takes: {takes})"))
            continue
        if output not in outputs_by_name:
            problems.append((("state", name), f"state.{name}: the model has no output '{output}' (it has: "
                                              f"{', '.join(output_names)})"))
            continue
        spec, source = by_name[name], outputs_by_name[output]
        # the one dynamic axis of a state tensor is its batch axis, wherever it is: one stream, so 1
        shape = [int(dim) if _fixed(dim) else 1 for dim in spec.shape]
        produced = list(source.shape)
        if (len(produced) != len(shape) and all(_fixed(dim) for dim in produced)) or any(
                _fixed(have) and have != want for have, want in zip(produced, shape, strict=False)):
            problems.append((("state", name), f"state.{name}: output '{output}' is {_shape_text(produced)} but input "
                                              f"'{name}' is {_shape_text(spec.shape)}"))
            continue
        slots.append(StateSlot(name, output, np.zeros(shape, dtype=np.dtype(spec.dtype))))
    described = set(card.constants) | set(card.state)
    streamed = card.input.name
    if streamed is not None and streamed not in by_name:
        problems.append((("input", "name"), f"the card's input '{streamed}' is not an input of the model (it takes: "
                                            f"{takes})"))
        streamed = None  # misnamed: the inputs it leaves undescribed are not a second problem
    elif streamed is None:
        rest = [name for name in by_name if name not in described]
        if len(rest) == 1:
            streamed = rest[0]
        else:
            problems.append((("input",), f"the model takes {len(by_name)} inputs ({takes}) and the card names none "
                                         "as the streamed one: set input.name"))
    uncovered = [name for name in by_name if name not in described and name != streamed]
    if uncovered and streamed is not None:
        where = ("constants",) if card.constants else ("state",) if card.state else ("input",)
        problems.append((where, f"model input '{uncovered[0]}' is not described by the card: it is not the streamed "
                                f"input ({streamed}), a constant (constants:) or a state input (state: {{input: "
                                "OUTPUT})" + (f"; nor are {', '.join(uncovered[1:])}" if len(uncovered) > 1 else "")))
    if problems:
        raise CardMismatch(problems)
    return InputPlan(streamed, constants, frozenset(batched), tuple(slots))


class StreamState:
    """The state of one stream between calls; zeros again after a gap longer than `max_gap_s` (None: never) or
    when time goes back. `resets` counts the restarts after the first call, by reason."""

    def __init__(self, plan: InputPlan, max_gap_s: float | None):
        self.plan = plan
        self.max_gap_s = max_gap_s
        self.resets = {"gap": 0, "time_back": 0, "non_finite": 0}
        self._values: dict[str, np.ndarray] | None = None
        self._last_ts: float | None = None

    def before(self, ts: float) -> dict[str, np.ndarray]:
        """The state to feed with the window whose newest sample is at `ts`."""
        if self._last_ts is not None:
            if ts <= self._last_ts:
                self.resets["time_back"] += 1
                self._values = None
            elif self.max_gap_s is not None and ts - self._last_ts > self.max_gap_s:
                self.resets["gap"] += 1
                self._values = None
        self._last_ts = ts
        if self._values is None:
            self._values = self.plan.initial_state()
        return self._values

    def after(self, outputs: Mapping[str, np.ndarray]) -> None:
        values = self.plan.next_state(outputs)
        if any(np.issubdtype(np.asarray(value).dtype, np.floating) and not np.isfinite(value).all()
               for value in values.values()):
            # a NaN/inf state would poison every later window of the stream: start over instead (the window
            # itself is dropped and counted by the worker)
            self._values = None
            self.resets["non_finite"] += 1
            return
        self._values = values

    def reset(self) -> None:
        self._values, self._last_ts = None, None

    def describe(self) -> dict:
        return {"inputs": [slot.input for slot in self.plan.state], "reset_gap_s": self.max_gap_s,
                "resets": dict(self.resets)}


def run_stream(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], plan: InputPlan,
               state: StreamState, rows: np.ndarray, ts: Sequence[float]) -> dict[str, np.ndarray]:
    """A stateful model over windows of one stream, in order, one call each, the state carried: every output
    stacked along the batch axis as if it had been one batch."""
    collected: dict[str, list[np.ndarray]] = {}
    for index, when in enumerate(ts):
        outputs = run(plan.feed(rows[index:index + 1], state.before(float(when))))
        state.after(outputs)
        for name, value in outputs.items():
            collected.setdefault(name, []).append(np.asarray(value))
    return {name: stack_outputs(parts) for name, parts in collected.items()}


def stack_outputs(parts: list[np.ndarray]) -> np.ndarray:
    """Batch-1 outputs joined along their batch axis; others (a state with its batch axis inside) stacked."""
    if all(part.ndim and part.shape[0] == 1 for part in parts):
        return np.concatenate(parts)
    return np.stack(parts)
