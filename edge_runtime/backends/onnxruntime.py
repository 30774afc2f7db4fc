"""onnxruntime with execution providers tried in the user's order (e.g. TensorRT, CUDA, then CPU).

Bundles carry portable ONNX; the session applies every graph optimisation (ORT_ENABLE_ALL) at load, because
only the device knows its hardware: an offline-optimised graph is tied to the machine that optimised it.

onnxruntime is quiet about providers: it drops one that fails to initialise and runs on the next, and by
default it switches a failing session to CPU at run time with a print. Here every provider that does not run
is recorded with its reason (an `Attempt`), and onnxruntime's own fallback is switched off, so a provider
failing at run time is an error the daemon reports rather than a silent move to the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge_runtime.backends.base import Attempt, AttemptsFailed, BackendUnavailable, BaseBackendConfig, LoadedBackend
from edge_runtime.board import TENSORRT, Board, OptionValue, TensorrtOptions
from edge_runtime.plugin import ConfigPath

NAME = "onnxruntime"
_INSTALL_HINT = "onnxruntime is not installed: pip install 'edge-runtime[onnx]'"

_log = logging.getLogger(__name__)


class OnnxRuntimeBackendConfig(BaseBackendConfig):
    """onnxruntime with execution providers tried in order (e.g. TensorRT, CUDA, then CPU)."""

    model_format = "onnx"
    type: Literal[NAME]
    providers: list[str] | None = Field(None, description="default: the board's provider list")
    threads: int | None = Field(None, gt=0, description="default: the board's threads")
    trt_engine_cache: ConfigPath | None = Field(
        None, description="TensorRT engine cache folder: the engine takes minutes to build on a Jetson"
    )
    tensorrt: TensorrtOptions | None = Field(None, description="TensorRT options over the board's")
    provider_options: dict[str, dict[str, OptionValue]] | None = Field(
        None, description="other providers' options over the board's, by provider name"
    )

# onnxruntime's tensor type names -> numpy, so callers may feed float64 or lists and still run; every input gets
# its own dtype (an int64 scalar sample rate next to float audio).
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(_INSTALL_HINT) from None
    return onnxruntime


def check_installed() -> None:
    """Raise BackendUnavailable when onnxruntime cannot be imported."""
    _import_onnxruntime()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class OnnxRuntimeBackend(LoadedBackend):
    """An onnxruntime session; `device` is the provider that runs the graph (the first the session kept)."""

    name = NAME

    def __init__(self, session: Any, attempts: list[Attempt], threads: int):
        self._session = session
        self.attempts = attempts
        self.threads = threads
        self.providers: list[str] = list(session.get_providers())
        self.device = self.providers[0]
        inputs = session.get_inputs()
        self.input_names = [meta.name for meta in inputs]
        self.output_names = [meta.name for meta in session.get_outputs()]
        self._dtypes = {meta.name: _NUMPY_TYPES.get(meta.type) for meta in inputs}
        first = inputs[0].shape[0] if inputs and inputs[0].shape else None
        self.max_batch = first if isinstance(first, int) and first > 0 else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("the onnxruntime session is closed")
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise ValueError(f"missing input '{name}' (the model takes: {', '.join(self.input_names)})")
            feed[name] = np.asarray(inputs[name], dtype=self._dtypes[name])
        values = self._session.run(self.output_names, feed)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self._session = None


def tensorrt_options(config: OnnxRuntimeBackendConfig, board: Board, precision: str) -> dict[str, OptionValue]:
    """TensorRT's options: the board's, the config's over them, `trt_engine_cache` and fp16 bundles on top.

    TensorRT builds its engine for this exact GPU when the session is created (or on the first run when shapes
    are dynamic): minutes on a Jetson. The engine cache keeps it across restarts; the warm-up runs at load absorb
    the build, so the first real prediction is not delayed. Without a timing cache path onnxruntime writes the
    timing cache to the working directory (`/` under systemd): it goes next to the engines instead.
    """
    options = board.onnxruntime.tensorrt.given()
    if config.tensorrt is not None:
        options.update(config.tensorrt.given())
    if config.trt_engine_cache is not None:
        options["trt_engine_cache_enable"] = True
        options["trt_engine_cache_path"] = str(config.trt_engine_cache)
    if precision == "fp16":
        options.setdefault("trt_fp16_enable", True)
    if options.get("trt_timing_cache_enable") and "trt_engine_cache_path" in options:
        options.setdefault("trt_timing_cache_path", options["trt_engine_cache_path"])
    return options


def provider_options(name: str, config: OnnxRuntimeBackendConfig, board: Board, precision: str) -> dict[str, str]:
    """One provider's options as onnxruntime takes them (strings; booleans as True/False)."""
    if name == TENSORRT:
        options = tensorrt_options(config, board, precision)
    else:
        options = dict(board.onnxruntime.provider_options.get(name, {}))
        options.update((config.provider_options or {}).get(name, {}))
    return {key: str(value) for key, value in options.items()}


def _provider_entry(name: str, config: OnnxRuntimeBackendConfig, board: Board, precision: str) -> str | tuple:
    """A provider as onnxruntime takes it: its name, or (name, options) when it has options."""
    options = provider_options(name, config, board, precision)
    return (name, options) if options else name


def _prepare_tensorrt(options: dict[str, str]) -> None:
    if options.get("trt_engine_cache_enable") != "True" or not options.get("trt_engine_cache_path"):
        _log.warning(
            "TensorRT builds its engine on the first run (minutes on a Jetson) and, without an engine cache "
            "(trt_engine_cache, or the board's trt_engine_cache_enable/trt_engine_cache_path), again at every start"
        )
        return
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if options.get(key):
            try:
                Path(options[key]).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                _log.warning("cannot create the TensorRT cache folder %s: %s", options[key], exc)
    _log.info("TensorRT builds its engine on the first run unless %s holds one for this model and GPU",
              options["trt_engine_cache_path"])


def _session_options(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _model_error(ort: Any) -> tuple[type[BaseException], ...]:
    """Errors that mean the model, not the provider, is at fault: no provider would do better."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = ("InvalidProtobuf", "InvalidGraph", "NoModel")
    return tuple(getattr(state, name) for name in names if state is not None and hasattr(state, name))


def open_backend(
    model_bytes: bytes, config: OnnxRuntimeBackendConfig, board: Board, precision: str = "fp32"
) -> OnnxRuntimeBackend:
    """Create a session on the first configured provider that works; raise AttemptsFailed if none does.

    Providers come from `config.providers` (default: the board's list). Only listed providers run: if
    onnxruntime ends up on one the user did not list (it appends the CPU), that is refused, not used.
    """
    ort = _import_onnxruntime()
    requested = list(dict.fromkeys(config.providers if config.providers is not None else board.onnxruntime.providers))
    if not requested:
        raise BackendUnavailable("onnxruntime: no execution providers configured")
    threads = config.threads or board.threads
    available = list(ort.get_available_providers())
    failed = {
        name: f"unavailable (not in this onnxruntime build: {', '.join(available)})"
        for name in requested
        if name not in available
    }
    remaining = [name for name in requested if name in available]
    if TENSORRT in remaining:
        _prepare_tensorrt(provider_options(TENSORRT, config, board, precision))

    session = None
    model_errors = _model_error(ort)
    while remaining and session is None:
        try:
            session = ort.InferenceSession(
                model_bytes,
                sess_options=_session_options(ort, threads),
                providers=[_provider_entry(name, config, board, precision) for name in remaining],
                enable_fallback=0,
            )
        except model_errors as exc:
            raise BackendUnavailable(f"onnxruntime cannot load the model: {_one_line(exc)}") from None
        except Exception as exc:  # onnxruntime raises RuntimeError, ValueError and its own Fail/EPFail types
            failed[remaining[0]] = f"failed to initialise ({_one_line(exc)})"
            remaining = remaining[1:]

    attempts: list[Attempt] = []
    active = session.get_providers()[0] if session is not None else None
    for name in requested:
        if name in failed:
            attempts.append(Attempt(NAME, name, failed[name]))
        elif name == active:
            attempts.append(Attempt(NAME, name, "ok"))
            break
        elif session is not None:
            # Passed to the session but not in its providers: onnxruntime dropped it without raising.
            attempts.append(Attempt(NAME, name, "dropped by onnxruntime at session creation (failed to initialise)"))
    else:
        if active is not None:
            attempts.append(Attempt(NAME, active, "refused: onnxruntime fell back to it but it is not configured"))
        raise AttemptsFailed(
            "onnxruntime can run none of the configured providers: " + "; ".join(a.sentence() for a in attempts),
            attempts,
        )
    _drop_model_bytes(session)
    return OnnxRuntimeBackend(session, attempts, threads)


def _drop_model_bytes(session: Any) -> None:
    """onnxruntime's Python session keeps the model bytes it was made from for as long as it lives, only to make
    the session again when providers change or its own fallback kicks in: neither happens here (`enable_fallback=0`,
    providers fixed at creation), so those megabytes are let go once the graph is built."""
    if isinstance(getattr(session, "_model_bytes", None), bytes):
        session._model_bytes = None


def describe_installed(board: Board) -> str:
    """What `edge-runtime check` says about onnxruntime here: version, providers, the board's that are missing."""
    ort = _import_onnxruntime()
    available = list(ort.get_available_providers())
    missing = [name for name in board.onnxruntime.providers if name not in available]
    text = f"onnxruntime {ort.__version__}, providers {', '.join(available)}"
    if missing:
        text += f"; {board.name} also wants {', '.join(missing)}, not in this build"
    return text
