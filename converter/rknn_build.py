"""Runs INSIDE the RKNN toolchain environment (`make toolchain-rknn`), never in the converter's: build one `.rknn`
with rknn-toolkit2 and run it in the toolkit's simulator on the verification samples.

    .cache/toolchains/rknn/bin/python converter/rknn_build.py JOB.json

rknn-toolkit2 pins numpy<=1.26.4, onnx<=1.18 and protobuf<=4.25.4, so the converter starts this script as a
subprocess (converter/rknn_toolchain.py) and the two talk JSON over files: JOB.json says what to build, the script
writes the `.rknn`, the simulator's outputs (an npz) and `result` (JSON: which step failed and the toolkit's
words). Build and simulation happen in one process because the simulator runs only a model built in the same
session, not a `.rknn` file loaded from disk. Standard library and numpy only besides the toolkit, imported inside
`main`, so the converter's environment can import this module (its tests do) without rknn installed.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


def _one_line(exc: BaseException) -> str:
    """The toolkit raises ValueError whose text is a whole traceback: keep its last non-empty lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    tail = [line for line in lines if not line.startswith(("File ", "Traceback", "^"))]
    return " ".join(tail[-2:]) if tail else type(exc).__name__


def _toolkit_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rknn-toolkit2")
    except metadata.PackageNotFoundError:
        return "unknown"


def _data_format(shape: list[int]) -> str | None:
    """The verification data is in the ONNX model's own layout: say so for 4-D (image) inputs, which the simulator
    otherwise takes as NHWC; other ranks are passed through as they are."""
    return "nchw" if len(shape) == 4 else None


def run_job(job: dict[str, Any], result: dict[str, Any]) -> None:
    import numpy as np
    from rknn.api import RKNN

    result["toolkit"] = f"rknn-toolkit2 {_toolkit_version()}"
    rknn = RKNN(verbose=False)
    try:
        names = [spec["name"] for spec in job["inputs"]]
        shapes = [spec["shape"] for spec in job["inputs"]]
        steps = (
            ("config", lambda: rknn.config(mean_values=job["mean_values"], std_values=job["std_values"],
                                           target_platform=job["target_platform"])),
            ("load_onnx", lambda: rknn.load_onnx(model=job["onnx"], inputs=names, input_size_list=shapes)),
            ("build", lambda: rknn.build(do_quantization=True, dataset=job["dataset"],
                                         auto_hybrid=bool(job.get("auto_hybrid")))),
            ("export_rknn", lambda: rknn.export_rknn(job["rknn"])),
            ("init_runtime", lambda: rknn.init_runtime()),  # no target: the simulator
        )
        for step, call in steps:
            result["step"] = step
            try:
                status = call()
            except Exception as exc:  # the toolkit raises ValueError with its traceback as the message
                result["error"] = _one_line(exc)
                return
            if status not in (0, None):
                result["error"] = f"{step} returned {status}"
                return
        result["step"] = "inference"
        samples = np.load(job["samples"], allow_pickle=False)
        count = len(samples[names[0]])
        formats = [_data_format(shape) for shape in shapes]
        rows: list[list[Any]] = []
        for index in range(count):
            feed = [np.ascontiguousarray(samples[name][index : index + 1]) for name in names]
            outputs = rknn.inference(inputs=feed, data_format=formats if any(formats) else None)
            if outputs is None:
                result["error"] = f"inference returned nothing for sample {index}"
                return
            rows.append(outputs)
        stacked = {name: np.concatenate([row[i] for row in rows]).astype(np.float32)
                   for i, name in enumerate(job["outputs"])}
        np.savez(job["simulated"], **stacked)
        result["step"] = "eval_perf"
        try:  # a performance estimate, if the toolkit gives one without a board (2.5.0 does not)
            result["perf"] = rknn.eval_perf()
        except Exception as exc:
            result["perf_unavailable"] = _one_line(exc)
        result["ok"] = True
        result["step"] = "done"
    finally:
        rknn.release()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: rknn_build.py JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    result: dict[str, Any] = {"ok": False, "step": "start", "error": None}
    try:
        run_job(job, result)
    except BaseException as exc:  # anything unforeseen is still a result the converter can report
        result["error"] = _one_line(exc)
        result["traceback"] = traceback.format_exc()[-4000:]
    Path(job["result"]).write_text(json.dumps(result, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
