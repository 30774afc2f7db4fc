"""Rockchip NPUs (RK3588 and kin) through rknn-toolkit-lite2: the bundle's `.rknn` model on the NPU cores.

A bundle converted for an RKNN board carries a `.rknn` (built by rknn-toolkit2 on the workstation and checked in its
simulator) next to the portable ONNX. This backend runs the `.rknn`; when it cannot, the model runs on the next
backend in the board's order (onnxruntime on the CPU, from the same bundle) and is reported degraded with the
reason. It cannot when rknn-toolkit-lite2 is not installed (aarch64 wheels only: `pip install
'edge-runtime[rknn]'`), when the board image lacks the RKNN runtime library `librknnrt.so` (Rockchip ships it in
the board's image, in /usr/lib), when the kernel shows no NPU (`/dev/rknpu`, or the board file's DRM render node),
or when the runtime refuses the model or the cores asked for. Each is checked before the runtime is touched, so the
reason names the missing piece instead of a driver's error code.

The core mask (`auto`: the runtime picks an idle core; `0_1_2`: one model over three cores) comes from the board
file's `rknn.core_mask`, or the model's `backends:` entry.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge_runtime.backends.base import BackendUnavailable, BaseBackendConfig, BundleModels, LoadedBackend
from edge_runtime.board import Board

NAME = "rknn"
RUNTIME_LIBRARY = "librknnrt.so"
NPU_NODES = ("/dev/rknpu",)
INSTALL_HINT = ("rknn-toolkit-lite2 is not installed: pip install 'edge-runtime[rknn]' (Rockchip aarch64 boards, "
                "Python 3.10-3.12)")
#: board file `core_mask` -> the name of rknnlite's constant
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}


class RknnBackendConfig(BaseBackendConfig):
    """The bundle's `.rknn` on a Rockchip NPU (rknn-toolkit-lite2 and the board's librknnrt.so)."""

    model_format = "rknn"
    uses_bundle = True
    type: Literal[NAME]
    core_mask: Literal["auto", "0", "1", "2", "0_1", "0_1_2", "all"] | None = Field(
        None, description="NPU cores: default the board's rknn.core_mask")


def _import_rknnlite() -> Any:
    try:
        from rknnlite.api import RKNNLite
    except ImportError:
        raise BackendUnavailable(INSTALL_HINT) from None
    return RKNNLite


def check_installed() -> None:
    """Raise BackendUnavailable when rknn-toolkit-lite2 cannot be imported."""
    _import_rknnlite()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def runtime_problem() -> str | None:
    """Why the RKNN runtime library cannot be loaded, or None when it can."""
    try:
        ctypes.CDLL(RUNTIME_LIBRARY)
    except OSError as exc:
        return (f"the RKNN runtime {RUNTIME_LIBRARY} is not loadable ({_one_line(exc)}): it comes with the board's "
                "image (Rockchip's rknpu2 runtime, in /usr/lib)")
    return None


def _root() -> Path:
    """Where /dev is read from: the machine's root, or $EDGE_HARDWARE_ROOT (a container with the host's under /host),
    as board detection reads it."""
    return Path(os.environ.get("EDGE_HARDWARE_ROOT") or "/")


def npu_nodes(board: Board) -> list[str]:
    """The device nodes that show the NPU: /dev/rknpu (vendor kernels) and the board file's NPU nodes (the DRM
    render node of the mainline driver)."""
    nodes = list(NPU_NODES)
    for accelerator in board.accelerators:
        if accelerator.kind == "npu":
            nodes += [node for node in accelerator.devices if node not in nodes]
    return nodes


def npu_problem(board: Board) -> str | None:
    """Why the kernel shows no NPU, or None when one of its nodes exists."""
    nodes = npu_nodes(board)
    root = _root()
    if any((root / node.lstrip("/")).exists() for node in nodes):
        return None
    return f"no NPU device node ({', '.join(nodes)} not found): the kernel's rknpu driver is not loaded"


class RknnBackend(LoadedBackend):
    """A `.rknn` loaded by RKNNLite on the NPU cores of `core_mask`; one sample per inference (the model's batch)."""

    name = NAME
    accelerated = "rknn"
    max_batch = 1

    def __init__(self, runtime: Any, core_mask: str, input_names: list[str], output_names: list[str]):
        self._runtime = runtime
        self.device = f"npu (cores {core_mask})"
        self.input_names = input_names
        self.output_names = output_names

    def _run_one(self, feed: list[np.ndarray]) -> list[np.ndarray]:
        # Inputs come in the ONNX model's layout; RKNN takes a 4-D input as NHWC unless told (as the converter's
        # simulator run was told).
        formats = ["nchw" if array.ndim == 4 else None for array in feed]
        outputs = self._runtime.inference(inputs=feed, data_format=formats if any(formats) else None)
        if outputs is None:
            raise RuntimeError("the RKNN runtime returned no outputs (see its log above)")
        return [np.asarray(value, dtype=np.float32) for value in outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Row by row: a `.rknn` is built for batch 1."""
        if self._runtime is None:
            raise RuntimeError("the RKNN runtime is released")
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ValueError(f"missing input '{missing[0]}' (the model takes: {', '.join(self.input_names)})")
        arrays = [np.asarray(inputs[name], dtype=np.float32) for name in self.input_names]
        rows = [self._run_one([np.ascontiguousarray(array[i : i + 1]) for array in arrays])
                for i in range(len(arrays[0]))]
        return {name: np.concatenate([row[index] for row in rows]) for index, name in enumerate(self.output_names)}

    def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.release()


def open_backend(model_bytes: bytes, config: RknnBackendConfig, board: Board, precision: str = "fp32",
                 bundle: BundleModels | None = None) -> RknnBackend:
    """Load the `.rknn` on the NPU; BackendUnavailable naming the missing piece when it cannot run here.

    `precision` is accepted for a uniform plugin signature: a `.rknn` carries its own types. The tensor names are
    the portable model's (`bundle`): the `.rknn` was built from it with the same inputs and outputs, in order.
    """
    lite = _import_rknnlite()
    for problem in (runtime_problem(), npu_problem(board)):
        if problem is not None:
            raise BackendUnavailable(problem)
    if bundle is None:
        raise BackendUnavailable("the rknn backend needs the bundle's tensor names (an edge-runtime bug)")
    core_mask = config.core_mask or (board.rknn.core_mask if board.rknn is not None else "auto")
    runtime = lite(verbose=False)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-rknn-") as folder:  # load_rknn takes a path
            path = Path(folder) / "model.rknn"
            path.write_bytes(model_bytes)
            status = runtime.load_rknn(str(path))
            if status != 0:
                raise BackendUnavailable(f"the RKNN runtime cannot load the .rknn (load_rknn returned {status})")
        status = runtime.init_runtime(core_mask=getattr(lite, CORE_MASKS[core_mask]))
        if status != 0:
            raise BackendUnavailable(f"the RKNN runtime refused the model on cores {core_mask} (init_runtime "
                                     f"returned {status}; a .rknn built for another chip, or an older librknnrt.so)")
    except BackendUnavailable:
        runtime.release()
        raise
    except Exception as exc:  # the runtime raises its own errors for a bad file or a driver problem
        runtime.release()
        raise BackendUnavailable(f"the RKNN runtime failed: {_one_line(exc)}") from None
    return RknnBackend(runtime, core_mask, list(bundle.input_names), list(bundle.output_names))


def describe_installed(board: Board) -> str:
    """What `edge-runtime check` says: rknn-toolkit-lite2's version, the runtime library and the NPU node."""
    _import_rknnlite()
    from importlib import metadata

    try:
        version = metadata.version("rknn-toolkit-lite2")
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    runtime = runtime_problem() or f"{RUNTIME_LIBRARY} loads"
    npu = npu_problem(board) or "NPU node found"
    return f"rknn-toolkit-lite2 {version}; {runtime}; {npu}"
