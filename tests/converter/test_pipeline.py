"""The pipeline as a list of named passes: their order, --skip checked against them, a switched-off pass reported
and not run, the one gate refusing before the one bundle writer. A one-layer model, no training."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import converter
from converter.cli import main
from converter.errors import ConversionError
from converter.onnx_frontend import open_onnx
from converter.options import ConvertOptions, GateFailed
from converter.pipeline import PASS_NAMES, PASSES, SKIPPABLE_PASSES, Pass, check_skip, convert, run_passes
from converter.report import Report
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle


def linear_model(weight: np.ndarray) -> onnx.ModelProto:
    """x [batch, 4] -> Gemm -> Softmax -> y [batch, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["logits"], name="linear"),
            helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(3, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def tiny(tmp_path) -> SimpleNamespace:
    """A linear classifier and data labelled by it (accuracy 100%), and the same layer with its weights negated."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    path = tmp_path / "linear.onnx"
    onnx.save(linear_model(weight), str(path))
    x = rng.normal(size=(64, 4)).astype(np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.argmax(x @ weight, axis=1))
    return SimpleNamespace(path=path, data=data, worse=linear_model(-weight), out=tmp_path / "out.bundle")


def options_for(tiny: SimpleNamespace, **extra) -> ConvertOptions:
    values = dict(model=tiny.path, output=tiny.out, target="x86_64", evaluation=tiny.data, measure_latency=False)
    return ConvertOptions(**(values | extra))


def test_the_passes_in_order():
    assert PASS_NAMES == ("check", "fuse", "prune", "quantize", "measure", "select", "verify", "npu", "edgetpu",
                          "reference", "package")
    assert SKIPPABLE_PASSES == ("fuse", "quantize", "verify", "npu", "reference")


def test_tflite_and_onnx_share_the_gate_and_the_bundle_writer():
    tflite = [step.name for step in PASSES if "tflite" in step.formats]
    onnx_passes = [step.name for step in PASSES if "onnx" in step.formats]
    assert tflite == ["measure", "select", "verify", "edgetpu", "reference", "package"]
    # the same tail but for the accelerator pass of each format (a .rknn from ONNX, a compiled Edge TPU TFLite)
    shared = [name for name in tflite if name != "edgetpu"]
    assert [name for name in onnx_passes if name != "npu"][-len(shared) :] == shared


def test_unknown_skip_name_is_one_message_with_the_known_names(tmp_path, capsys):
    code = main([str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.bundle"), "--target", "x86_64",
                 "--skip", "fuse,quantise"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "quantise" in err and "fuse, quantize, verify, npu, reference" in err
    assert not (tmp_path / "o.bundle").exists()


@pytest.mark.parametrize("name", ["check", "package", "select"])
def test_a_pass_every_conversion_needs_cannot_be_skipped(name):
    with pytest.raises(ConversionError, match=f"--skip {name}: every conversion needs this pass") as error:
        check_skip({name, "fuse"})
    assert "fuse, quantize, verify, npu, reference" in str(error.value)


def test_skip_names_that_can_be_switched_off_pass_the_check():
    check_skip(set(SKIPPABLE_PASSES))
    check_skip(set())


def fake_conversion(skip: set[str], model_format: str = "onnx") -> SimpleNamespace:
    return SimpleNamespace(
        options=SimpleNamespace(skip=skip), engine=SimpleNamespace(format=model_format), report=Report("m", "b")
    )


def test_run_passes_runs_in_order_and_reports_a_skipped_pass_without_running_it():
    ran: list[str] = []
    passes = tuple(
        Pass(name, lambda _conversion, name=name: ran.append(name), optional=name != "a") for name in "abc"
    )
    conversion = fake_conversion({"b"})
    run_passes(conversion, passes)
    assert ran == ["a", "c"]
    assert conversion.report.passes == {"b": "skipped (--skip)"}


def test_run_passes_leaves_out_a_pass_that_does_not_apply_to_the_format():
    ran: list[str] = []
    passes = (
        Pass("graph", lambda _c: ran.append("graph"), optional=True, formats=frozenset({"onnx"})),
        Pass("gate", lambda _c: ran.append("gate")),
    )
    conversion = fake_conversion({"graph"}, model_format="tflite")
    run_passes(conversion, passes)
    assert ran == ["gate"] and conversion.report.passes == {}


def test_the_context_is_complete_when_the_front_end_returns(tiny):
    conversion = open_onnx(options_for(tiny), load_board("x86_64"), None, Console(quiet=True))
    assert list(conversion.stages) == ["original"] and conversion.float_stage == "original"
    assert conversion.output_name == "y" and conversion.classification is True
    assert conversion.reference_outputs.shape == (64, 3)
    assert conversion.report.stages[0].accuracy == 1.0 and conversion.report.passes == {"check": "ran"}
    assert conversion.quantize == "int8"  # what the board prefers, resolved before any pass runs
    assert conversion.quantized_stage is None and conversion.reference == {} and conversion.manifest is None


def test_switched_off_passes_are_reported_as_skipped_in_the_bundle(tiny):
    result = convert(
        options_for(tiny, skip={"fuse", "quantize", "verify", "reference"}), Console(quiet=True)
    )
    report = read_bundle(tiny.out).manifest.verification
    assert report["passes"] == {
        "check": "ran",
        "fuse": "skipped (--skip)",
        "quantize": "skipped (--skip)",
        "verify": "skipped (--skip): gate not enforced",
        "reference": "skipped (--skip)",
    }
    assert [stage["stage"] for stage in report["stages"]] == ["original"] and report["final_stage"] == "original"
    assert read_bundle(tiny.out).manifest.reference == {} and result.report.gate["passed"] is True


def worse_quantize(tiny: SimpleNamespace) -> tuple[Pass, ...]:
    """The real pass list with `quantize` replaced by one that makes a model whose answers are all wrong."""

    def quantize(conversion) -> None:
        conversion.record("worse", tiny.worse, "int8")
        conversion.quantized_stage = "worse"

    return tuple(Pass("quantize", quantize, optional=True) if step.name == "quantize" else step for step in PASSES)


def test_the_gate_refuses_before_anything_is_written(tiny):
    tiny.out.write_bytes(b"the previous good bundle")
    conversion = open_onnx(options_for(tiny, quantize="none"), load_board("x86_64"), None, Console(quiet=True))
    with pytest.raises(GateFailed, match="bundle refused: the worse model loses") as refused:
        run_passes(conversion, worse_quantize(tiny))
    assert refused.value.report.gate["passed"] is False and refused.value.report.passes["verify"] == "ran"
    assert tiny.out.read_bytes() == b"the previous good bundle"
    assert sorted(path.name for path in tiny.out.parent.iterdir()) == ["data.npz", "linear.onnx", "out.bundle"]


def test_skip_verify_lets_the_same_model_through(tiny):
    options = options_for(tiny, quantize="none", skip={"verify"})
    conversion = open_onnx(options, load_board("x86_64"), None, Console(quiet=True))
    run_passes(conversion, worse_quantize(tiny))
    assert conversion.report.gate["passed"] is True and conversion.report.gate["loss"] > 0.5
    assert conversion.manifest is not None and read_bundle(tiny.out).manifest.verification["final_stage"] == "worse"


def _converter_imports() -> dict[str, set[str]]:
    """Module -> the converter modules it imports (at the top or inside a function)."""
    root = Path(converter.__file__).parent
    modules = {
        ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("converter"):
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
                found |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("converter")}
        graph[name] = found & set(modules)
    return graph


def test_the_converter_modules_import_each_other_without_a_cycle():
    graph = _converter_imports()
    assert "converter.pipeline" in graph["converter.cli"]
    assert not [name for name, imports in graph.items() if "converter.pipeline" in imports and name != "converter.cli"]
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for imported in sorted(graph[name]):
            assert state.get(imported) != "open", "import cycle: " + " -> ".join([*path, name, imported])
            if imported not in state:
                visit(imported, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
