"""edgetpu: bundle an Edge TPU-compiled TFLite model the user gives (`--edgetpu-model`) next to the CPU model.

`edgetpu_compiler` (an x86-64 tool from Google's apt repository, not reachable here) compiles a full-int8 TFLite
model for the Edge TPU: what it can place runs as one `edgetpu-custom-op`, the rest stays on the host CPU. The
compiled model cannot run without the TPU, so it cannot be verified on a workstation: it is checked to be a TFLite
model that calls the Edge TPU, bundled as an accelerator model without a golden output of its own, and the device
uses it only when it reproduces the CPU model's golden output on the Edge TPU; otherwise, or without libedgetpu, the
CPU model runs and the model is reported degraded. The CPU model is the one verified here, so give the model
the compiled one was made from.
"""

from __future__ import annotations

from typing import Any

from converter.conversion import Conversion
from converter.errors import ConversionError
from converter.package import AcceleratedContents

#: the operator edgetpu_compiler puts the TPU's part of the graph in
EDGETPU_OP = b"edgetpu-custom-op"
ACCELERATOR = "Edge TPU"


def edgetpu_delegates(conversion: Conversion[Any]) -> list[str]:
    return [path for path in conversion.board.tflite.delegates if path.rsplit("/", 1)[-1].startswith("libedgetpu")]


def edgetpu_pass(conversion: Conversion[Any]) -> None:
    path = conversion.options.edgetpu_model
    if path is None:
        return
    if not edgetpu_delegates(conversion):
        raise ConversionError(f"--edgetpu-model: board '{conversion.board.name}' has no Edge TPU delegate "
                              "(libedgetpu.so.1 in its tflite delegates): use --target coral-usb or coral-devboard")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"--edgetpu-model {path}: {exc.strerror or exc}") from None
    if data[4:8] != b"TFL3":
        raise ConversionError(f"--edgetpu-model {path} is not a TFLite model")
    if EDGETPU_OP not in data:
        raise ConversionError(f"--edgetpu-model {path} is not compiled for the Edge TPU (it has no "
                              f"{EDGETPU_OP.decode()} operator): compile the CPU model with edgetpu_compiler")
    conversion.accelerated.append(AcceleratedContents(data, "edgetpu", ACCELERATOR, "int8"))
    conversion.report.npu = {
        "accelerator": ACCELERATOR,
        "status": f"bundled ({conversion.accelerated[-1].path}), not verified here",
        "reason": "no Edge TPU on this machine; the device uses it only when it reproduces the CPU model's golden "
                  "output on the TPU, else the CPU model runs (degraded)",
        "operators": [],
    }
    conversion.report.passes["edgetpu"] = "ran (bundled as given)"
