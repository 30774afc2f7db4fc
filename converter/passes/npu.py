"""npu: for a board with a Rockchip NPU (`rknn:` in its board file), a `.rknn` next to the portable model.

Runs after the gate passed the CPU model, which stays in the bundle as the fallback. rknn-toolkit2 builds the
`.rknn` from the float graph (the fused or pruned one: RKNN quantizes it itself, int8, calibrated on the same
`--calibration` data) in its own environment (converter/rknn_toolchain.py), and runs it in its simulator on the
verification data in the same process. The simulator's outputs are judged like every other stage: a report row
(agreement, cosine, accuracy) against the original, and the same accuracy budget. What does not make it into the
bundle is said in the report's `npu` section, the bundle then runs on the CPU:

- no toolchain (`make toolchain-rknn` makes it): one line saying how to get it;
- a model the toolkit cannot build (an operator it rejects, a dynamic graph): the step that failed and the
  operators it named;
- a simulated model that loses more than the budget (unless `--skip verify`), also when rebuilt with the toolkit's
  automatic hybrid quantization (the layers that lose most in float16), which is tried when int8 alone does;
- models with a recurrent state or non-float inputs, which this pass does not build for the NPU.

Normalisation: the daemon applies the card's (`normalize`, an image's `scale`) before every backend, and the data
given to the converter is model-ready, so the `.rknn` takes exactly the ONNX model's input: the toolkit's
mean/std stay the identity (one value per input channel). Folding them in would apply them twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter.conversion import Conversion, StageShape
from converter.package import AcceleratedContents
from converter.rknn_toolchain import RknnBuild, RknnJob, find_toolchain, run_build

STAGE = "rknn (simulator)"
#: builds tried in order until one is within the accuracy budget: (report row, precision, auto_hybrid); the
#: toolkit's automatic hybrid quantization keeps in float16 the layers whose outputs lose the most
TRIALS = ((STAGE, "int8", False), ("rknn hybrid (simulator)", "mixed", True))
#: calibration samples given to the toolkit (it needs tens to a few hundred; each is a file and a simulator run)
MAX_CALIBRATION = 128
NORMALISATION = ("applied by the daemon before every backend, as for the CPU model; the toolkit's mean/std are the "
                 "identity")


def npu_pass(conversion: Conversion[Any]) -> None:
    rknn = conversion.board.rknn
    if rknn is None:
        return
    report = conversion.report
    accelerator = f"{rknn.target_platform} NPU"
    report.npu = {"accelerator": accelerator, "status": "", "reason": "", "operators": [], "trials": []}
    job, unsuitable = _job(conversion)
    python, missing = find_toolchain()
    if unsuitable or python is None:
        _not_built(conversion, unsuitable or missing)
        return
    budget = conversion.options.max_accuracy_drop
    for stage, precision, hybrid in TRIALS:
        job.auto_hybrid = hybrid
        build = run_build(python, job)
        report.npu["toolkit"] = build.toolkit
        if not build.ok:
            if not report.npu["trials"]:  # the plain int8 build failed: nothing to bundle
                report.npu["operators"] = build.operators
                _not_built(conversion, f"rknn-toolkit2 failed at {build.step}: {build.error}")
                return
            report.npu["trials"].append({"stage": stage, "error": f"{build.step}: {build.error}"})
            break
        evaluated = len(conversion.data.verify)
        simulated = {name: value[:evaluated] for name, value in build.simulated.items()}
        golden = {name: value[evaluated:] for name, value in build.simulated.items()}
        problem = _shape_problem(conversion, simulated)
        if problem:
            _not_built(conversion, problem)
            return
        shape = StageShape(len(build.rknn), conversion.engine.describe(conversion.float_model).nodes,
                           note=f"{accelerator}, {build.toolkit} simulator")
        conversion.add_stage(stage, build.rknn, precision, simulated, shape=shape)
        loss = conversion.loss(stage)
        report.npu["trials"].append({"stage": stage, "loss": round(loss, 6)})
        report.npu["normalisation"] = NORMALISATION
        report.npu["performance"] = _performance(build)
        if loss <= budget or not conversion.gate_enforced:
            conversion.accelerated.append(AcceleratedContents(build.rknn, "rknn", accelerator, precision, golden))
            report.npu["status"] = "bundled (model.rknn)"
            report.npu["reason"] = (f"{stage}: {loss * 100:.2f} points lost against the original, allowed "
                                    f"{budget * 100:.2f}")
            report.passes["npu"] = "ran"
            return
    lost = ", ".join(f"{trial['stage']} {trial['loss'] * 100:.2f}" for trial in report.npu["trials"] if "loss" in trial)
    report.npu["status"] = "not bundled"
    report.npu["reason"] = (f"in the simulator it loses more than the {budget * 100:.2f} points allowed (points "
                            f"lost: {lost}); the bundle runs on the CPU")
    report.passes["npu"] = "not bundled (over the accuracy budget)"
    report.notes.append(f"{accelerator}: the .rknn is not bundled: {report.npu['reason']}")


def _not_built(conversion: Conversion[Any], reason: str) -> None:
    report = conversion.report
    report.npu["status"] = "not built"
    report.npu["reason"] = reason
    report.passes["npu"] = "not built: the bundle runs on the CPU"
    report.notes.append(f"{report.npu['accelerator']}: no .rknn in the bundle, it runs on the CPU: {reason}")


def _job(conversion: Conversion[Any]) -> tuple[RknnJob | None, str]:
    """The build job, or why this model is not built for the NPU."""
    data = conversion.data
    model = conversion.float_model
    inputs, outputs = conversion.engine.tensors(model)
    if data.verify.sequence is not None or data.verify.batch_axes or data.verify.unbatched:
        return None, "models with a recurrent state are not built for the NPU here"
    shapes: dict[str, list[int]] = {}
    for info in inputs:
        rest = info.shape[1:]
        if info.dtype not in ("float32", "float16") or not all(isinstance(dim, int) and dim > 0 for dim in rest):
            return None, f"input '{info.name}' ({info.dtype} {info.shape_text()}) is not a float tensor of fixed shape"
        shapes[info.name] = [1, *rest]
    calibration = data.calibration or data.verify
    pick = np.unique(np.linspace(0, len(calibration) - 1, min(len(calibration), MAX_CALIBRATION)).astype(int))
    golden = data.verify.golden()
    samples = {name: np.concatenate([data.verify.inputs[name], np.asarray(golden[name])]) for name in shapes}
    channels = [shape[1] if len(shape) > 1 else 1 for shape in shapes.values()]
    job = RknnJob(
        onnx=conversion.engine.payload(model),
        inputs=shapes,
        outputs=[info.name for info in outputs],
        calibration={name: calibration.inputs[name][pick] for name in shapes},
        samples=samples,
        target_platform=conversion.board.rknn.target_platform,
        mean_values=[[0.0] * count for count in channels],
        std_values=[[1.0] * count for count in channels],
    )
    return job, ""


def _shape_problem(conversion: Conversion[Any], simulated: dict[str, np.ndarray]) -> str:
    """The simulator's outputs must be the original's, by name and size (reshaped to its shape when they differ
    only in layout of the same elements, as a 2-D output returned 4-D would)."""
    reference = conversion.reference_outputs
    value = simulated.get(conversion.output_name)
    if value is None:
        return f"the simulator returned no output '{conversion.output_name}'"
    if value.size != reference.size:
        return f"the simulator's '{conversion.output_name}' has shape {list(value.shape)}, the model's " \
               f"{list(reference.shape)}"
    simulated[conversion.output_name] = value.reshape(reference.shape)
    return ""


def _performance(build: RknnBuild) -> str:
    if build.perf:
        return f"{build.perf} (the toolkit's estimate; simulator figures are not board timings)"
    return ("none: the toolkit gives no estimate without a board (eval_perf: "
            f"{build.perf_unavailable or 'not available'}); measure on the board with `edge-runtime bench`")
