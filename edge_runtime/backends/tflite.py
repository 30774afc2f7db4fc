"""TFLite / LiteRT models through `ai_edge_litert`, or `tflite_runtime` on boards that only have that.

ai-edge-litert is preferred: tflite-runtime 2.14 (its last release) fails with numpy 2 when an Interpreter is
created. Quantized (int8/uint8) inputs and outputs are converted with the tensors' own scale and zero point,
so callers always feed and read float32 for them; other inputs and outputs keep their own dtype.

As a backend plugin (`open_backend`), delegates (libedgetpu.so.1, an NPU's external delegate) are tried in the
user's order; the first that loads and lets the model allocate its tensors runs it. Without one the model
runs on the CPU, where ai-edge-litert applies XNNPACK by default. Every delegate that failed is recorded with
its reason, so a missing accelerator shows up as a degraded backend instead of a silent slowdown.

A bundle may carry an Edge TPU-compiled model (`accelerated` format `edgetpu`, made by `edgetpu_compiler` from the
bundle's CPU model) next to the CPU model: the Edge TPU delegate runs the compiled one, the CPU the other (a compiled
model cannot run without the delegate: its `edgetpu-custom-op` is the Edge TPU's program).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge_runtime.backends.base import (
    Attempt,
    AttemptsFailed,
    BackendUnavailable,
    BaseBackendConfig,
    BundleModels,
    LoadedBackend,
)
from edge_runtime.board import Board, OptionValue

NAME = "tflite"
#: delegate libraries `edge-runtime check` looks for besides the board's, and where each comes from
KNOWN_DELEGATES = {
    "libedgetpu.so.1": "Coral Edge TPU: libedgetpu1-std from Coral's apt repository",
    "libarmnnDelegate.so": "Arm NN: Mali GPU and NEON, from Arm's release or the board vendor",
    "libvx_delegate.so": "VeriSilicon VX: NXP i.MX 8M Plus NPU, from NXP's BSP",
}

_log = logging.getLogger(__name__)


class TfliteBackendConfig(BaseBackendConfig):
    """LiteRT/TFLite with delegates tried in order (libedgetpu.so.1, an NPU's external delegate), else XNNPACK."""

    model_format = "tflite"
    uses_bundle = True
    type: Literal[NAME]
    delegates: list[str] | None = Field(None, description="default: the board's delegates")
    delegate_options: dict[str, dict[str, OptionValue]] | None = Field(
        None, description="options over the board's, by delegate library (libedgetpu.so.1: {device: usb})"
    )
    threads: int | None = Field(None, gt=0)


class TfliteUnavailable(ImportError):
    pass


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class of whichever LiteRT package is installed, and the package's name."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise TfliteUnavailable(
            "no TFLite interpreter: pip install 'edge-runtime[tflite]' (ai-edge-litert) or tflite-runtime"
        ) from None


@dataclass(frozen=True)
class TensorDetail:
    name: str
    index: int
    shape: list[int]  # -1 for a dynamic dimension
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0


def _details(raw: dict[str, Any]) -> TensorDetail:
    signature = raw.get("shape_signature")
    shape = [int(d) for d in (signature if signature is not None and len(signature) else raw["shape"])]
    scale, zero_point = raw.get("quantization", (0.0, 0))
    return TensorDetail(
        raw["name"], int(raw["index"]), shape, np.dtype(raw["dtype"]).name, float(scale), int(zero_point)
    )


class TfliteModel:
    """A loaded TFLite model: float32 for (de)quantized tensors, every other tensor in its own dtype, batch first."""

    def __init__(self, content: bytes, *, threads: int = 1, delegates: list[Any] | None = None):
        interpreter, self.package = interpreter_class()
        kwargs: dict[str, Any] = {"model_content": content, "num_threads": threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.interpreter = interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        self.inputs = [_details(raw) for raw in self.interpreter.get_input_details()]
        self.outputs = [_details(raw) for raw in self.interpreter.get_output_details()]
        self._batch = 1

    @property
    def dynamic_batch(self) -> bool:
        batched = [detail for detail in self.inputs if detail.shape]
        return bool(batched) and all(detail.shape[0] == -1 for detail in batched)

    def _batched(self, detail: TensorDetail, value: np.ndarray) -> bool:
        """A batch-first input (not a scalar constant, not a state tensor that keeps its batch axis inside)."""
        return bool(detail.shape) and detail.shape[0] in (-1, 1) and value.ndim == len(detail.shape)

    def _batch_of(self, feed: dict[str, np.ndarray]) -> int:
        sizes = [len(value) for detail in self.inputs
                 if self._batched(detail, value := np.asarray(feed[detail.name]))]
        return max(sizes, default=1)

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for detail in self.inputs:
            if detail.shape and detail.shape[0] == -1:
                self.interpreter.resize_tensor_input(detail.index, [batch, *detail.shape[1:]], strict=True)
        self.interpreter.allocate_tensors()
        self._batch = batch

    def _set(self, detail: TensorDetail, value: np.ndarray) -> None:
        """Quantized inputs go through their scale and zero point; others are cast to their own dtype (float
        audio, an int64 sample rate, a boolean flag), never through float32."""
        value = np.asarray(value)
        if detail.quantized:
            info = np.iinfo(detail.dtype)
            value = np.clip(np.round(value.astype(np.float32) / detail.scale + detail.zero_point), info.min, info.max)
        self.interpreter.set_tensor(detail.index, np.array(value, dtype=detail.dtype, order="C"))  # 0-d stays 0-d

    def _run_batch(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self._resize(self._batch_of(feed))
        for detail in self.inputs:
            self._set(detail, feed[detail.name])
        self.interpreter.invoke()
        results = []
        for detail in self.outputs:
            value = self.interpreter.get_tensor(detail.index)
            if detail.quantized:
                value = (value.astype(np.float32) - detail.zero_point) * detail.scale
            results.append(np.array(value))  # a copy: the interpreter reuses its buffers
        return results

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in output order; rows one at a time when the model's batch dimension is fixed (inputs without a
        batch axis, such as constants, go with every row)."""
        batch = self._batch_of(feed)
        if self.dynamic_batch or batch == 1:
            return self._run_batch(feed)
        details = {detail.name: detail for detail in self.inputs}
        rows = []
        for i in range(batch):
            row = {name: value[i : i + 1] if self._batched(details[name], np.asarray(value)) else value
                   for name, value in feed.items()}
            rows.append(self._run_batch(row))
        return [np.concatenate(parts) for parts in zip(*rows, strict=True)]


# -- the backend plugin --------------------------------------------------------------------------------------
def check_installed() -> None:
    """Raise BackendUnavailable when neither ai_edge_litert nor tflite_runtime can be imported."""
    try:
        interpreter_class()
    except TfliteUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None


def delegate_loader(package: str) -> Callable[..., Any]:
    """`load_delegate` of the interpreter package in use (a delegate must come from the same package)."""
    if package == "ai_edge_litert":
        from ai_edge_litert.interpreter import load_delegate
    else:
        from tflite_runtime.interpreter import load_delegate
    return load_delegate


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _library_problem(path: str) -> str | None:
    """Why `path` is not a loadable external delegate library, or None if it looks like one.

    Checked with ctypes before `load_delegate`: the interpreter packages' Delegate object raises from its
    constructor and then fails again in `__del__` (an "Exception ignored" traceback on stderr) when the
    library is missing or is not a delegate. dlopen is reference-counted, so loading it twice is harmless.
    """
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        return _one_line(exc)
    for symbol in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"):
        if not hasattr(library, symbol):
            return f"not a TFLite delegate library: no {symbol}"
    return None


class TfliteBackend(LoadedBackend):
    """A TfliteModel as a backend; `device` is the delegate that runs it, or the CPU."""

    name = NAME

    def __init__(self, model: TfliteModel, device: str, attempts: list[Attempt], threads: int,
                 accelerated: str | None = None):
        self.model = model
        self.accelerated = accelerated
        self.device = device
        self.attempts = attempts
        self.threads = threads
        self.input_names = [detail.name for detail in model.inputs]
        self.output_names = [detail.name for detail in model.outputs]
        first = model.inputs[0].shape[0] if model.inputs and model.inputs[0].shape else -1
        # The model's own batch dimension; `run` still takes bigger batches (row by row) when it is fixed.
        self.max_batch = None if model.dynamic_batch or first <= 0 else first

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.model is None:
            raise RuntimeError("the TFLite interpreter is closed")
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"missing input '{missing[0]}' (the model takes: {', '.join(self.input_names)})")
        values = self.model.run({name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self.model = None


def delegate_options(path: str, config: TfliteBackendConfig, board: Board) -> dict[str, str]:
    """A delegate's options (the board's, the config's over them) as its create function takes them: strings."""
    options = dict(board.tflite.delegate_options.get(path, {}))
    options.update((config.delegate_options or {}).get(path, {}))
    return {key: str(value) for key, value in options.items()}


def is_edgetpu(path: str) -> bool:
    """Coral's delegate library (libedgetpu.so.1, or a path to it)."""
    return Path(path).name.startswith("libedgetpu")


def open_backend(
    model_bytes: bytes, config: TfliteBackendConfig, board: Board, precision: str = "fp32",
    bundle: BundleModels | None = None,
) -> TfliteBackend:
    """Load the model on the first configured delegate that works, else on the CPU.

    `precision` is accepted for a uniform plugin signature and ignored: a .tflite file carries its own types.
    Delegates come from `config.delegates` (default: the board's list; an empty list means CPU only). The Edge TPU
    delegate gets the bundle's Edge TPU-compiled model when it has one; the CPU always gets `model_bytes`.
    """
    compiled = (bundle.accelerated.get("edgetpu") if bundle is not None else None)
    try:
        _, package = interpreter_class()
    except TfliteUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    delegates = config.delegates if config.delegates is not None else board.tflite.delegates
    threads = config.threads or board.threads
    load_delegate = delegate_loader(package) if delegates else None
    attempts: list[Attempt] = []
    for path in dict.fromkeys(delegates):
        problem = _library_problem(path)
        if problem is not None:
            attempts.append(Attempt(NAME, path, f"failed to load ({problem})", is_delegate=True))
            continue
        try:
            delegate = load_delegate(path, delegate_options(path, config, board) or None)
        except Exception as exc:  # ValueError from the plugin's create function, OSError, RuntimeError
            attempts.append(Attempt(NAME, path, f"failed to load ({_one_line(exc)})", is_delegate=True))
            continue
        variant = "edgetpu" if compiled is not None and is_edgetpu(path) else None
        try:
            model = TfliteModel(compiled if variant else model_bytes, threads=threads, delegates=[delegate])
        except Exception as exc:  # the delegate refused the graph: ValueError/RuntimeError from allocate_tensors
            attempts.append(Attempt(NAME, path, f"cannot run the model ({_one_line(exc)})", is_delegate=True))
            continue
        attempts.append(Attempt(NAME, path, "ok", is_delegate=True))
        return TfliteBackend(model, path, attempts, threads, accelerated=variant)

    device = "cpu (XNNPACK)" if package == "ai_edge_litert" else "cpu"
    try:
        model = TfliteModel(model_bytes, threads=threads)
    except Exception as exc:
        attempts.append(Attempt(NAME, device, f"cannot load the model ({_one_line(exc)})"))
        raise AttemptsFailed(
            "tflite can run the model nowhere: " + "; ".join(attempt.sentence() for attempt in attempts), attempts
        ) from None
    attempts.append(Attempt(NAME, device, "ok"))
    return TfliteBackend(model, device, attempts, threads)


def describe_installed(board: Board) -> str:
    """What `edge-runtime check` says about LiteRT here: the package, and whether each board delegate loads."""
    try:
        _, package = interpreter_class()
    except TfliteUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    from importlib import metadata

    distribution = "ai-edge-litert" if package == "ai_edge_litert" else "tflite-runtime"
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    text = f"{package} {version}, CPU{' with XNNPACK' if package == 'ai_edge_litert' else ''}"
    for path in board.tflite.delegates:
        problem = _library_problem(path)
        text += f"; delegate {path} " + ("loads" if problem is None else f"not loadable ({problem})")
    others = [path for path in KNOWN_DELEGATES if path not in board.tflite.delegates]
    found = [path for path in others if _library_problem(path) is None]
    if found:
        text += f"; also found, not in board {board.name}'s delegates: {', '.join(found)}"
    missing = [f"{path} ({KNOWN_DELEGATES[path]})" for path in others if path not in found]
    if missing:
        text += f"; not found here: {', '.join(missing)}"
    return text
