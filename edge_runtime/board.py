"""Board files (``device_configs/<board>.yaml``): what a target board is, what it can run and how.

The converter reads a board to decide how to quantize (activation signedness, per-channel, which operators are
worth running in int8); the daemon reads it for the backend order with each backend's providers, delegates and
their options, threads, the thermal zone and throttling flags it reports, and the memory budget `check` holds the
models to. Board detection (`edge_runtime.hardware.detect`) matches the `detect` section against the machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_runtime.card import Strict
from edge_runtime.yaml_source import ConfigError, load_model

Precision = Literal["int8", "fp16", "none"]
OptionValue = str | int | float | bool
TENSORRT = "TensorrtExecutionProvider"


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

    @model_validator(mode="after")
    def _preferred_is_supported(self) -> QuantizationSupport:
        if self.preferred not in self.supports:
            raise ValueError(f"preferred {self.preferred} is not in supports ({', '.join(self.supports)})")
        return self


class TensorrtOptions(Strict):
    """onnxruntime's TensorRT provider options (typed, so a misspelt one is an error, not ignored by onnxruntime).

    TensorRT builds an engine for the exact GPU, model and shapes when the session is created: minutes on a
    Jetson. The engine cache keeps it across restarts, the timing cache speeds up building the next model.
    """

    device_id: int | None = None
    trt_fp16_enable: bool | None = Field(None, description="default: on when the bundle is fp16")
    trt_int8_enable: bool | None = None
    trt_engine_cache_enable: bool | None = None
    trt_engine_cache_path: str | None = None
    trt_timing_cache_enable: bool | None = None
    trt_timing_cache_path: str | None = Field(None, description="default: the engine cache path")
    trt_max_workspace_size: int | None = Field(None, gt=0)
    trt_builder_optimization_level: int | None = Field(None, ge=0, le=5)
    trt_min_subgraph_size: int | None = Field(None, gt=0)
    trt_max_partition_iterations: int | None = Field(None, gt=0)
    trt_dla_enable: bool | None = None
    trt_dla_core: int | None = Field(None, ge=0)
    trt_force_sequential_engine_build: bool | None = None
    trt_context_memory_sharing_enable: bool | None = None
    trt_layer_norm_fp32_fallback: bool | None = None
    trt_build_heuristics_enable: bool | None = None
    trt_sparsity_enable: bool | None = None
    trt_detailed_build_log: bool | None = None
    trt_cuda_graph_enable: bool | None = None
    trt_engine_hw_compatible: bool | None = None

    def given(self) -> dict[str, OptionValue]:
        """The options set in the file, by onnxruntime's names."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class OnnxRuntimeBackend(Strict):
    """onnxruntime on this board: providers in order, with their options."""

    providers: list[str] = Field(["CPUExecutionProvider"], description="execution providers, tried in this order")
    tensorrt: TensorrtOptions = Field(default_factory=TensorrtOptions, description=f"options of {TENSORRT}")
    provider_options: dict[str, dict[str, OptionValue]] = Field(
        default_factory=dict, description="options of any other provider, by provider name, passed as given"
    )
    only_backend: bool = Field(
        False, description="the board runs nothing but onnxruntime, so com.microsoft operators are allowed"
    )

    @model_validator(mode="after")
    def _options_name_listed_providers(self) -> OnnxRuntimeBackend:
        if TENSORRT in self.provider_options:
            raise ValueError(f"give {TENSORRT}'s options under `tensorrt:`, where they are checked")
        unlisted = sorted(set(self.provider_options) - set(self.providers))
        if unlisted:
            raise ValueError(f"provider_options for provider(s) not in providers: {', '.join(unlisted)}")
        return self


class TfliteBackend(Strict):
    """LiteRT/TFLite on this board: external delegate libraries in order, with their options."""

    delegates: list[str] = Field(default_factory=list, description="delegate libraries tried in order, then the CPU")
    delegate_options: dict[str, dict[str, OptionValue]] = Field(
        default_factory=dict, description="options passed to a delegate library's create function, by library name"
    )

    @model_validator(mode="after")
    def _options_name_listed_delegates(self) -> TfliteBackend:
        unlisted = sorted(set(self.delegate_options) - set(self.delegates))
        if unlisted:
            raise ValueError(f"delegate_options for delegate(s) not in delegates: {', '.join(unlisted)}")
        return self


class RknnBackend(Strict):
    """A Rockchip NPU: the chip rknn-toolkit2 builds `.rknn` models for, and the NPU cores rknn-toolkit-lite2 runs
    them on (`auto`: the runtime picks an idle core; `0_1_2`: one model split over three cores)."""

    target_platform: Literal["rk3588", "rk3576", "rk3568", "rk3566", "rk3562"] = "rk3588"
    core_mask: Literal["auto", "0", "1", "2", "0_1", "0_1_2", "all"] = "auto"


class Accelerator(Strict):
    """An accelerator on (or plugged into) the board, and how the runtime reaches it."""

    name: str
    kind: Literal["gpu", "tpu", "npu", "dla"]
    reached_by: str = Field(description="the backend and provider/delegate that runs models on it, or why none")
    supported: bool = Field(True, description="whether edge-runtime's backends can run models on it")
    devices: list[str] = Field(default_factory=list, description="device nodes that show it is present")
    usb_ids: list[str] = Field(default_factory=list, description="vendor:product ids that show it is plugged in")


class Detection(Strict):
    """How `edge_runtime.hardware.detect` recognises this board (any one match counts)."""

    compatible: list[str] = Field(default_factory=list, description="strings of /proc/device-tree/compatible")
    tegra_release: list[str] = Field(
        default_factory=list, description="L4T major releases (/etc/nv_tegra_release) the board file is written for"
    )
    devices: list[str] = Field(default_factory=list, description="device nodes, e.g. /dev/apex_0")
    usb_ids: list[str] = Field(default_factory=list, description="vendor:product of a USB accelerator")
    fallback: bool = Field(False, description="chosen on this arch when no other board matches")

    @field_validator("compatible")
    @classmethod
    def _vendor_comma_name(cls, values: list[str]) -> list[str]:
        # an unquoted [brcm,bcm2711] in YAML is two strings; device-tree compatibles are "vendor,name"
        bad = [value for value in values if "," not in value]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a device-tree compatible (vendor,name): quote each one in YAML")
        return values


class Board(Strict):
    """Top level of a board file."""

    name: str
    description: str = ""
    arch: Literal["x86_64", "aarch64", "armv7l"]
    cpu: str = Field("", description="core types and clocks, e.g. 4x Cortex-A72 @ 1.8 GHz")
    cores: int = Field(gt=0)
    threads: int = Field(gt=0, description="inference threads; measured, not assumed")
    memory_budget_mb: int | None = Field(
        None, gt=0, description="resident memory the daemon may use with its models loaded; `check` holds it to this"
    )
    accelerators: list[Accelerator] = Field(default_factory=list)
    backends: list[Literal["rknn", "onnxruntime", "tflite"]] = ["onnxruntime", "tflite"]
    onnxruntime: OnnxRuntimeBackend = OnnxRuntimeBackend()
    tflite: TfliteBackend = TfliteBackend()
    rknn: RknnBackend | None = Field(None, description="a Rockchip NPU: the converter builds a .rknn for it")
    quantization: QuantizationSupport = QuantizationSupport()
    thermal_zone: str | None = Field(
        "/sys/class/thermal/thermal_zone0/temp",
        description="the temperature the daemon reports: a thermal zone's type (cpu-thermal) or a file path",
    )
    throttled_file: str | None = Field(
        "/sys/devices/platform/*/*firmware/get_throttled",
        description="a glob for the firmware's throttling flags (the Raspberry Pi's get_throttled; where it matches "
        "nothing, the CPU/GPU frequency cooling devices are read instead)",
    )
    requires_tflite: bool = Field(False, description="the accelerator only runs (compiled) TFLite models")
    detect: Detection = Detection()
    notes: str = Field("", description="what works on this board and what does not, said plainly")

    @model_validator(mode="after")
    def _threads_fit(self) -> Board:
        if self.threads > self.cores:
            raise ValueError(f"threads ({self.threads}) is more than cores ({self.cores})")
        return self

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


def all_boards() -> list[Board]:
    """Every board file that ships (the first folder of `board_dirs` that has a name wins)."""
    return [load_board(name) for name in known_boards()]
