"""Backend discovery: plugins found by module with their config and model format, native libraries imported only
when a backend of that kind is used, and a new backend being one new file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from edge_runtime.backends import BaseBackendConfig, backend_plugins
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.backends.tflite import TfliteBackendConfig

REPO = Path(__file__).resolve().parents[3]


def _run_python(code: str, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter (so discovery starts from nothing) and return the JSON it prints."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_discovery_finds_the_built_in_backends():
    plugins = backend_plugins()
    assert list(plugins) == ["onnxruntime", "rknn", "tflite"]
    assert plugins["rknn"].model_format == "rknn"
    assert plugins["onnxruntime"].config is OnnxRuntimeBackendConfig and plugins["onnxruntime"].model_format == "onnx"
    assert plugins["tflite"].config is TfliteBackendConfig and plugins["tflite"].model_format == "tflite"
    assert all(issubclass(plugin.config, BaseBackendConfig) for plugin in plugins.values())
    assert OnnxRuntimeBackendConfig.config_paths() == ("trt_engine_cache",)


def test_native_libraries_are_imported_only_for_the_backend_used(tmp_path):
    found = _run_python("""
        import json, sys
        NATIVE = ("onnxruntime", "ai_edge_litert", "tflite_runtime", "serial", "PIL", "rknnlite")
        loaded = lambda: sorted(name for name in NATIVE if name in sys.modules)
        from edge_runtime.backends import backend_plugins, load_plugin
        from edge_runtime.config import DaemonConfig
        backend_plugins()
        after_discovery = loaded()
        load_plugin("tflite")
        after_tflite = loaded()
        print(json.dumps({"after_discovery": after_discovery, "after_tflite": after_tflite}))
    """, tmp_path)
    assert found["after_discovery"] == []
    assert found["after_tflite"] in (["ai_edge_litert"], ["tflite_runtime"])  # and still no onnxruntime


ECHO_PLUGIN = '''
"""A test plugin: a backend declared by one file, nothing registered anywhere else."""

from __future__ import annotations

from typing import Literal

import numpy as np

from edge_runtime.backends.base import BackendUnavailable, BaseBackendConfig, LoadedBackend
from edge_runtime.plugin import ConfigPath

NAME = "echo"


class EchoBackendConfig(BaseBackendConfig):
    model_format = "onnx"
    type: Literal[NAME]
    cache: ConfigPath | None = None


class EchoBackend(LoadedBackend):
    name = NAME
    device = "cpu"
    input_names = ["x"]
    output_names = ["y"]
    max_batch = None

    def run(self, inputs):
        return {"y": np.asarray(inputs["x"])}


def check_installed() -> None:
    pass


def open_backend(model_bytes, config, board, precision="fp32"):
    if not model_bytes:
        raise BackendUnavailable("echo needs a model")
    return EchoBackend()
'''


def test_adding_a_backend_is_adding_one_file(tmp_path):
    """A module dropped into the backends package is in the config union (with config-relative paths and
    did-you-mean), listed for its model format, and chosen like the built-in ones."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "echo.py").write_text(ECHO_PLUGIN)
    (tmp_path / "good.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n"
        "    source: {type: synthetic}\n    backends:\n      - {type: echo, cache: state/echo}\n"
    )
    (tmp_path / "typo.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n"
        "    source: {type: synthetic}\n    backends:\n      - type: echo\n        cahce: state/echo\n"
    )
    found = _run_python(f"""
        import json
        import edge_runtime.backends
        edge_runtime.backends.__path__.append({str(plugins)!r})  # the one new file, in the package's search path

        from edge_runtime.backends import available_backends, backend_plugins, backends_for_format
        from edge_runtime.backends.select import choose_backend
        from edge_runtime.board import load_board
        from edge_runtime.config import load_config
        from edge_runtime.yaml_source import ConfigError

        config = load_config("good.yaml").models[0].backends[0]
        try:
            load_config("typo.yaml")
        except ConfigError as error:
            typo = str(error)
        choice = choose_backend(b"model", "onnx", [config], load_board("x86_64"))
        print(json.dumps({{
            "listed": list(backend_plugins()), "config": type(config).__name__, "cache": str(config.cache),
            "onnx": backends_for_format("onnx"), "available": available_backends()["echo"],
            "active": choice.active, "degraded": choice.degraded, "typo": typo,
        }}))
    """, tmp_path)
    assert found["listed"] == ["echo", "onnxruntime", "rknn", "tflite"]
    assert found["config"] == "EchoBackendConfig" and found["cache"] == str((tmp_path / "state/echo").resolve())
    assert found["onnx"] == ["echo", "onnxruntime"] and found["available"] is None
    assert found["active"] == "echo:cpu" and found["degraded"] is False
    assert "[typo.yaml:8] models.0.backends.0.cahce: unknown key. Did you mean 'cache'?" in found["typo"]
