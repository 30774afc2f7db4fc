"""Board files (``device_configs/<board>.yaml``): what a target board can run and how fast.

The converter reads a board to decide how to quantize (activation signedness, per-channel, which operators
are worth running in int8); the daemon reads it for threads and the default backend order.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_runtime.card import Strict
from edge_runtime.yaml_source import ConfigError, load_model

Precision = Literal["int8", "fp16", "none"]


class QuantizationSupport(Strict):
    """What the converter may do to a graph for this board."""

    preferred: Precision = Field("int8", description="what `--quantize auto` picks")
    supports: list[Precision] = ["int8", "fp16", "none"]
    activations: Literal["int8", "uint8"] = Field(
        "int8", description="activation signedness: uint8 is what x86 VNNI kernels run fast, int8 suits ARM"
    )
    weights: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = Field(False, description="7-bit weights, for x86 CPUs without VNNI")
    fast_ops: list[str] = Field(
        default_factory=lambda: ["Conv", "MatMul", "Gemm"],
        description="operators the board's int8 kernels run fast; the quantizer leaves the rest in float",
    )


class OnnxRuntimeBackend(Strict):
    providers: list[str] = ["CPUExecutionProvider"]
    only_backend: bool = Field(
        False, description="the board runs nothing but onnxruntime, so com.microsoft operators are allowed"
    )


class TfliteBackend(Strict):
    delegates: list[str] = Field(default_factory=list, description="delegate libraries tried in order")


class Board(Strict):
    """Top level of a board file."""

    name: str
    description: str = ""
    arch: Literal["x86_64", "aarch64", "armv7l"]
    cores: int = Field(gt=0)
    threads: int = Field(gt=0, description="inference threads; measured, not assumed")
    backends: list[Literal["onnxruntime", "tflite"]] = ["onnxruntime", "tflite"]
    onnxruntime: OnnxRuntimeBackend = OnnxRuntimeBackend()
    tflite: TfliteBackend = TfliteBackend()
    quantization: QuantizationSupport = QuantizationSupport()
    thermal_zone: str | None = "/sys/class/thermal/thermal_zone0/temp"
    requires_tflite: bool = Field(False, description="the accelerator only runs (compiled) TFLite models")

    def runs_on_this_host(self) -> bool:
        """Whether latency measured on this machine says something about the board."""
        return self.arch == platform.machine()


def board_dirs() -> list[Path]:
    """Where board files are looked up: $EDGE_DEVICE_CONFIGS, the checkout, then the installed copy."""
    dirs = []
    if os.environ.get("EDGE_DEVICE_CONFIGS"):
        dirs.append(Path(os.environ["EDGE_DEVICE_CONFIGS"]))
    package = Path(__file__).resolve().parent
    dirs += [package.parent / "device_configs", package / "device_configs"]
    return [path for path in dirs if path.is_dir()]


def known_boards() -> list[str]:
    names = {path.stem for folder in board_dirs() for path in folder.glob("*.yaml")}
    return sorted(names)


class UnknownBoardError(ConfigError):
    pass


def load_board(name_or_path: str) -> Board:
    """Load a board by name (``raspberry-pi-4``) or by the path of a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_model(candidate, Board)
    for folder in board_dirs():
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return load_model(path, Board)
    raise UnknownBoardError(
        name_or_path, [f"unknown board '{name_or_path}'. Known boards: {', '.join(known_boards())}"]
    )
