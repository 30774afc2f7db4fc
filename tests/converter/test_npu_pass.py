"""The npu pass without its toolchain, and reading the toolkit's words (the toolkit itself: test_rknn_conversion)."""

from __future__ import annotations

import json

from converter.cli import main as convert
from converter.pipeline import SKIPPABLE_PASSES
from converter.rknn_toolchain import find_toolchain, rejected_operators
from edge_runtime.bundle import read_bundle

# What rknn-toolkit2 2.5.0 printed here for a Unique node and a random node (colour codes included).
UNIQUE_LOG = (
    "\x1b[1;31mE\x1b[0m \x1b[1;31mbuild: The input 0 of Unique('distinct') need to be constant! It will cause the "
    "graph to be a dynamic graph!\x1b[0m\n"
    "\x1b[1;31mE\x1b[0m \x1b[1;31mbuild:                   Remove Unique('distinct') manually and try again!\x1b[0m\n"
)
RANDOM_LOG = "E build: Found Random node 'noise', which is not supported, please remove it manually and try again!\n"


def test_the_operators_the_toolkit_names_are_read_from_its_log():
    (unique,) = rejected_operators(UNIQUE_LOG)
    assert (unique["op"], unique["node"]) == ("Unique", "distinct") and "dynamic graph" in unique["problem"]
    (random,) = rejected_operators(RANDOM_LOG)
    assert (random["op"], random["node"]) == ("Random", "noise")
    assert rejected_operators("I build: done\nW build: The default input dtype of 'x' is changed\n") == []


def test_a_missing_toolchain_is_named_with_the_command_that_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RKNN_TOOLCHAIN", str(tmp_path / "nowhere"))
    python, why = find_toolchain()
    assert python is None and "make toolchain-rknn" in why and str(tmp_path / "nowhere") in why
    (tmp_path / "half" / "bin").mkdir(parents=True)
    (tmp_path / "half" / "bin" / "python").write_text("")
    monkeypatch.setenv("EDGE_RKNN_TOOLCHAIN", str(tmp_path / "half"))
    assert "incomplete" in find_toolchain()[1]
    assert "npu" in SKIPPABLE_PASSES


def test_without_the_toolchain_an_rk3588_bundle_still_runs_on_the_cpu(activity_sample, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("EDGE_RKNN_TOOLCHAIN", str(tmp_path / "nowhere"))
    out = tmp_path / "activity.bundle"
    code = convert([str(activity_sample.onnx_path), "-o", str(out), "--target", "rk3588", "--card",
                    str(activity_sample.card_path), "--calibration", str(activity_sample.calibration_path),
                    "--no-latency", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["npu"]["status"] == "not built" and "make toolchain-rknn" in report["npu"]["reason"]
    assert any("make toolchain-rknn" in note for note in report["notes"])
    manifest = read_bundle(out).manifest
    assert manifest.accelerated == [] and manifest.model.precision == "int8"
