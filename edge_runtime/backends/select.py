"""Choosing the backend that runs a model: the user's order, every attempt recorded, never a silent fallback.

The order is the model's `backends` list from the config file, or else the board's (its backends that run the
bundle's format, or one of the formats the bundle also carries a model in, such as a `.rknn` next to the ONNX,
each with the board's providers or delegates). Whatever runs, the choice says whether it is
the first thing asked for; if not, it is `degraded`, the reason names what failed, and a WARNING is logged.
"""

from __future__ import annotations

import logging

from edge_runtime.backends import backend_plugins, load_plugin
from edge_runtime.backends.base import (
    Attempt,
    AttemptsFailed,
    BackendChoice,
    BackendUnavailable,
    BaseBackendConfig,
    BundleModels,
    LoadedBackend,
)
from edge_runtime.board import Board

_log = logging.getLogger("edge_runtime.backends")


def default_configs(board: Board, model_format: str, also: tuple[str, ...] = ()) -> list[BaseBackendConfig]:
    """The board's backends that run `model_format` (or a format in `also`: the bundle's accelerator models), in the
    board's order, with the board's providers/delegates."""
    plugins = backend_plugins()
    formats = {model_format, *also}
    return [
        plugins[name].config(type=name)
        for name in board.backends
        if name in plugins and plugins[name].model_format in formats
    ]


def _try(model_bytes: bytes, config: BaseBackendConfig, board: Board, precision: str,
         bundle: BundleModels | None) -> LoadedBackend | list[Attempt]:
    """The loaded backend, or the attempts that explain why this config cannot run the model."""
    name = config.type
    try:
        plugin = load_plugin(name)
        if type(config).uses_bundle and bundle is not None:
            return plugin.open_backend(model_bytes, config, board, precision=precision, bundle=bundle)
        return plugin.open_backend(model_bytes, config, board, precision=precision)
    except AttemptsFailed as exc:
        return exc.attempts or [Attempt(name, None, f"unavailable ({exc})")]
    except BackendUnavailable as exc:
        return [Attempt(name, None, f"unavailable ({exc})")]


def choose_backend(
    model_bytes: bytes,
    model_format: str,
    configs: list[BaseBackendConfig] | None,
    board: Board,
    precision: str = "fp32",
    bundle: BundleModels | None = None,
    earlier: list[Attempt] | None = None,
) -> BackendChoice:
    """Load the model on the first backend (and provider/delegate) in order that works.

    `bundle` carries the bundle's models compiled for an accelerator: a backend whose format is one of them runs
    that model (the rknn backend, a `.rknn`). `earlier` are attempts already made for this bundle (an accelerator
    whose golden output did not match): they count toward `degraded` and its reason.
    Raises AttemptsFailed (a BackendUnavailable) listing every attempt when nothing can run the model.
    """
    accelerated = dict(bundle.accelerated) if bundle is not None else {}
    if configs is None:
        configs = default_configs(board, model_format, tuple(accelerated))
        if not configs:
            raise BackendUnavailable(
                f"board '{board.name}' has no backend for {model_format} models (it runs: {', '.join(board.backends)})"
            )
    attempts: list[Attempt] = list(earlier or [])
    for config in configs:
        plugin = backend_plugins().get(config.type)
        runs = plugin.model_format if plugin is not None else None
        if runs != model_format and runs not in accelerated:
            has = f"has {' and '.join([model_format, *accelerated])}" if accelerated else f"is {model_format}"
            attempts.append(Attempt(config.type, None, f"skipped (runs {runs} models, this bundle {has})"))
            continue
        data = model_bytes if runs == model_format else accelerated[runs]
        result = _try(data, config, board, precision, bundle)
        if isinstance(result, list):
            attempts.extend(result)
            continue
        attempts.extend(getattr(result, "attempts", None) or [Attempt(result.name, result.device, "ok")])
        return _choice(result, attempts)
    listing = "\n".join(f"  {attempt}" for attempt in attempts)
    raise AttemptsFailed(f"no backend can run this {model_format} model; tried:\n{listing}", attempts)


def _choice(backend: LoadedBackend, attempts: list[Attempt]) -> BackendChoice:
    """Degraded whenever the first attempt (first config, its first provider/delegate) is not what runs."""
    failures = [attempt.sentence() for attempt in attempts if not attempt.ok]
    degraded = not attempts[0].ok
    reason = None
    if degraded:
        reason = "; ".join(failures) + f"; running on {backend.name}:{backend.device}"
        _log.warning("backend fallback: %s", reason)
    return BackendChoice(backend=backend, degraded=degraded, reason=reason, attempts=[str(a) for a in attempts])
