"""The RKNN toolchain seen from the converter: where its environment is, and one build-and-simulate run in it.

rknn-toolkit2 cannot live in the converter's environment (it pins numpy<=1.26.4, onnx<=1.18, protobuf<=4.25.4), so
`make toolchain-rknn` gives it its own (`.cache/toolchains/rknn`, or `$EDGE_RKNN_TOOLCHAIN`) and the converter runs
converter/rknn_build.py there as a subprocess: a job file in, the `.rknn`, the simulator's outputs and a result file
out. The toolkit's own log is kept so that a failed build can be reported per operator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV_VAR = "EDGE_RKNN_TOOLCHAIN"
DEFAULT = Path(__file__).resolve().parent.parent / ".cache" / "toolchains" / "rknn"
SCRIPT = Path(__file__).resolve().parent / "rknn_build.py"
#: a build of a large model plus its simulation takes minutes on 2 cores; a hung toolkit must not hang the converter
TIMEOUT_S = 1800
INSTALL_HINT = ("run `make toolchain-rknn` in the edge-runtime checkout, or set EDGE_RKNN_TOOLCHAIN to such an "
                "environment")


def toolchain_dir() -> Path:
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else DEFAULT


def find_toolchain() -> tuple[Path | None, str]:
    """The toolchain's python, or None and one line saying where it was looked for and how to make it."""
    root = toolchain_dir()
    python = root / "bin" / "python"
    if not python.exists():
        return None, f"the RKNN toolchain is not installed (looked in {root}): {INSTALL_HINT}"
    if not (root / ".installed").exists():
        return None, f"the RKNN toolchain in {root} is incomplete (its install did not finish): {INSTALL_HINT}"
    return python, ""


@dataclass
class RknnJob:
    """What to build: the float ONNX graph, fixed input shapes (batch 1), calibration and verification samples."""

    onnx: bytes
    inputs: dict[str, list[int]]  # name -> shape with batch 1, in the model's order
    outputs: list[str]
    calibration: dict[str, np.ndarray]  # name -> samples first
    samples: dict[str, np.ndarray]  # what the simulator runs: name -> samples first
    target_platform: str
    mean_values: list[list[float]]
    std_values: list[list[float]]
    #: the toolkit's automatic hybrid quantization: layers whose output loses cosine stay in float16
    auto_hybrid: bool = False


@dataclass
class RknnBuild:
    """The outcome: the `.rknn` and the simulator's outputs, or the step that failed, the toolkit's words, and the
    operators it named."""

    ok: bool
    step: str
    error: str | None
    toolkit: str
    rknn: bytes | None = None
    simulated: dict[str, np.ndarray] = field(default_factory=dict)
    operators: list[dict] = field(default_factory=list)
    perf: str | None = None  # the toolkit's performance estimate, when it gives one
    perf_unavailable: str | None = None  # why it did not
    log_tail: str = ""


def _calibration_list(folder: Path, job: RknnJob) -> Path:
    """rknn-toolkit2's dataset: a text file with one line per sample, the .npy files of its inputs in order."""
    count = len(next(iter(job.calibration.values())))
    lines = []
    for index in range(count):
        paths = []
        for position, name in enumerate(job.inputs):
            path = folder / f"calibration_{index}_{position}.npy"
            np.save(path, np.ascontiguousarray(job.calibration[name][index : index + 1], dtype=np.float32))
            paths.append(str(path))
        lines.append(" ".join(paths))
    dataset = folder / "dataset.txt"
    dataset.write_text("\n".join(lines) + "\n")
    return dataset


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "The input 0 of NonZero('y') need to be constant! ...", "Remove Unique('y') manually", "Op type X is not support"
_NAMED_NODE = re.compile(r"\b([A-Z][A-Za-z0-9]*)\('([^']+)'\)")
_RANDOM_NODE = re.compile(r"Found (Random\w*) node '([^']+)'")
_NOT_SUPPORTED = re.compile(r"(?:op(?:erator)?(?: type)?)\s+'?([A-Z][A-Za-z0-9]+)'?[^.!\n]*not support", re.I)


def rejected_operators(text: str) -> list[dict]:
    """The operators the toolkit's error lines name, each once, with the line that names it."""
    found: dict[tuple[str, str], str] = {}
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip()
        if not line.startswith(("E ", "ValueError", "W build")) and "not support" not in line:
            continue
        message = re.sub(r"^(E|W) \w+: ", "", line)
        for pattern in (_NAMED_NODE, _RANDOM_NODE):
            for op, node in pattern.findall(line):
                found.setdefault((op, node), message)
        for op in _NOT_SUPPORTED.findall(line):
            found.setdefault((op, ""), message)
    return [{"op": op, "node": node, "problem": problem} for (op, node), problem in found.items()]


def run_build(python: Path, job: RknnJob, timeout_s: float = TIMEOUT_S) -> RknnBuild:
    """Build, export and simulate in the toolchain's environment; never raises for what the toolkit does."""
    with tempfile.TemporaryDirectory(prefix="edge-rknn-") as temporary:
        folder = Path(temporary)
        model = folder / "model.onnx"
        model.write_bytes(job.onnx)
        np.savez(folder / "samples.npz", **{name: np.ascontiguousarray(job.samples[name], dtype=np.float32)
                                            for name in job.inputs})
        spec = {
            "onnx": str(model),
            "inputs": [{"name": name, "shape": shape} for name, shape in job.inputs.items()],
            "outputs": job.outputs,
            "target_platform": job.target_platform,
            "mean_values": job.mean_values,
            "std_values": job.std_values,
            "auto_hybrid": job.auto_hybrid,
            "dataset": str(_calibration_list(folder, job)),
            "samples": str(folder / "samples.npz"),
            "rknn": str(folder / "model.rknn"),
            "simulated": str(folder / "simulated.npz"),
            "result": str(folder / "result.json"),
        }
        (folder / "job.json").write_text(json.dumps(spec))
        log_path = folder / "toolkit.log"
        try:
            with open(log_path, "wb") as log:
                subprocess.run([str(python), str(SCRIPT), str(folder / "job.json")], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s, check=False,
                               cwd=folder, env={**os.environ, "PYTHONPATH": ""})
        except subprocess.TimeoutExpired:
            return RknnBuild(False, "timeout", f"the toolkit did not finish within {timeout_s:.0f} s", "rknn-toolkit2")
        log_text = log_path.read_text(errors="replace")
        result_path = folder / "result.json"
        if not result_path.exists():
            tail = _ANSI.sub("", log_text).strip().splitlines()[-1:] or ["no output"]
            return RknnBuild(False, "start", f"the toolchain's python failed to run the build: {tail[0]}",
                             "rknn-toolkit2", log_tail=log_text[-4000:])
        result = json.loads(result_path.read_text())
        build = RknnBuild(
            ok=bool(result.get("ok")),
            step=result.get("step", "?"),
            error=result.get("error"),
            toolkit=result.get("toolkit", "rknn-toolkit2"),
            perf=None if result.get("perf") is None else str(result["perf"]),
            perf_unavailable=result.get("perf_unavailable"),
            log_tail=_ANSI.sub("", log_text)[-4000:],
        )
        if not build.ok:
            build.operators = rejected_operators(log_text + "\n" + (build.error or ""))
            return build
        build.rknn = (folder / "model.rknn").read_bytes()
        with np.load(folder / "simulated.npz", allow_pickle=False) as simulated:
            build.simulated = {name: simulated[name] for name in simulated.files}
        return build
