"""Source discovery: plugins found by module, unknown types, a clear message when an optional library is missing,
lazy imports of those libraries, and a new source being one new file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_runtime.sources import SourceUnavailable, create_source, source_class, source_plugins, stream_shape
from edge_runtime.sources.base import BaseSourceConfig, Source
from edge_runtime.sources.serial import SerialSourceConfig
from edge_runtime.sources.synthetic import SyntheticSourceConfig

REPO = Path(__file__).resolve().parents[3]
BUILT_IN = ["mqtt", "replay", "iio", "serial", "synthetic", "folder", "camera", "audio"]


def test_discovery_finds_every_built_in_source_in_listing_order():
    plugins = source_plugins()
    assert list(plugins) == BUILT_IN  # the order of a config error's "expected tags", as before discovery
    for key, plugin in plugins.items():
        assert issubclass(plugin.config, BaseSourceConfig) and plugin.config.plugin_key() == key
        assert plugin.module == f"edge_runtime.sources.{key}"
        assert plugin.source.type == key


@pytest.mark.parametrize("type_name", sorted(set(source_plugins()) - {"serial"}))
def test_every_source_module_has_its_class(type_name):
    cls = source_class(type_name)
    assert issubclass(cls, Source) and cls.type == type_name


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown source type 'webcam'; known: audio, camera, folder, iio, mqtt"):
        source_class("webcam")


def test_serial_without_pyserial_says_what_to_install(monkeypatch, make_context):
    monkeypatch.setitem(sys.modules, "serial", None)  # makes `import serial` fail as if it were not installed
    monkeypatch.delitem(sys.modules, "edge_runtime.sources.serial", raising=False)
    with pytest.raises(SourceUnavailable, match=r"the serial source needs pyserial: pip install pyserial"):
        source_class("serial")
    with pytest.raises(SourceUnavailable, match="pip install pyserial"):
        create_source(SerialSourceConfig(type="serial", port="/dev/ttyACM0"), make_context())


def test_discovery_on_an_install_without_any_optional_library(tmp_path):
    """pyserial, Pillow, onnxruntime and LiteRT all missing: every plugin is still discovered, a config naming them
    validates, and using one says what to install (so `check` can name the problem instead of a schema error)."""
    (tmp_path / "daemon.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n"
        "  - bundle: a.bundle\n    source: {type: serial, port: /dev/ttyACM0}\n    backends: [{type: tflite}]\n"
        "  - bundle: b.bundle\n    source: {type: folder, path: images}\n    backends: [{type: onnxruntime}]\n"
    )
    found = _run_python("""
        import json, sys
        for name in ("serial", "PIL", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
            sys.modules[name] = None  # `import name` fails as on a device install without it
        from edge_runtime.backends import BackendUnavailable, backend_plugins, load_plugin
        from edge_runtime.config import load_config
        from edge_runtime.sources import SourceUnavailable, source_class, source_plugins

        config = load_config("daemon.yaml")
        hints = []
        for use in (lambda: source_class("serial"), lambda: load_plugin("tflite"), lambda: load_plugin("onnxruntime")):
            try:
                use()
            except (SourceUnavailable, BackendUnavailable) as error:
                hints.append(str(error))
        print(json.dumps({"sources": list(source_plugins()), "backends": list(backend_plugins()), "hints": hints,
                          "types": [[m.source.type, m.backends[0].type] for m in config.models]}))
    """, tmp_path)
    assert found["sources"] == BUILT_IN and found["backends"] == ["onnxruntime", "rknn", "tflite"]
    assert found["types"] == [["serial", "tflite"], ["folder", "onnxruntime"]]
    assert found["hints"] == [
        "the serial source needs pyserial: pip install pyserial",
        "no TFLite interpreter: pip install 'edge-runtime[tflite]' (ai-edge-litert) or tflite-runtime",
        "onnxruntime is not installed: pip install 'edge-runtime[onnx]'",
    ]


def test_create_source_builds_without_starting(make_context, sink):
    source = create_source(SyntheticSourceConfig(type="synthetic", duration_s=1.0), make_context())
    assert source.type == "synthetic" and not source.finished
    assert sink.items == []


def test_stream_shape(timeseries_card, image_card):
    from edge_runtime.card import ModelCard

    assert stream_shape(timeseries_card(channels=6, rate_hz=50)) == (6, 50)
    assert stream_shape(timeseries_card(rate_hz=50), rate_hz=200) == (3, 200)
    features = ModelCard.model_validate({"name": "tab", "input": {"features": 4}})
    assert stream_shape(features) == (4, 1.0)
    with pytest.raises(ValueError, match="takes images"):
        stream_shape(image_card())


def _run_python(code: str, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter (so discovery starts from nothing) and return the JSON it prints."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_board_without_serial_or_images_never_imports_pyserial_or_pillow(tmp_path):
    (tmp_path / "walk.csv").write_text("ts,ax\n" + "".join(f"{i / 10},{i}\n" for i in range(30)))
    (tmp_path / "daemon.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n"
        "  - bundle: a.bundle\n    source: {type: replay, path: walk.csv, speed: 0}\n"
        "  - bundle: b.bundle\n    source: {type: synthetic}\n"
    )
    found = _run_python("""
        import json, sys
        from edge_runtime.card import ModelCard
        from edge_runtime.config import load_config
        from edge_runtime.sources import create_source
        from edge_runtime.sources.base import SourceContext

        class Sink:
            def accept(self, item): pass
            def reject(self, rejected, source): pass

        card = ModelCard.model_validate({"name": "m", "input": {"window": 10, "hop": 5, "rate_hz": 10, "channels": 1}})
        for model in load_config("daemon.yaml").models:
            create_source(model.source, SourceContext(card=card, sink=Sink()))
        print(json.dumps(sorted(name for name in ("serial", "PIL", "onnxruntime", "ai_edge_litert", "tflite_runtime")
                                if name in sys.modules)))
    """, tmp_path)
    assert found == []


SPEAKER_PLUGIN = '''
"""A test plugin: a source declared by one file, nothing registered anywhere else."""

from __future__ import annotations

from typing import Literal

from edge_runtime.plugin import ConfigPath
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource

SOURCE_KEY = "speaker"


class SpeakerSourceConfig(BaseSourceConfig):
    type: Literal[SOURCE_KEY]
    calibration: ConfigPath
    gain: float = 1.0


class SpeakerSource(ThreadedSource):
    type = SOURCE_KEY
    requires = {"edge_test_no_such_audio_lib": "edge-test-audio"}

    def _run(self) -> None:
        pass
'''


def test_adding_a_source_is_adding_one_file(tmp_path):
    """A module dropped into the sources package is in the config union (with its keys checked, did-you-mean,
    file:line and config-relative paths) and in create_source, with its own pip hint."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "speaker.py").write_text(SPEAKER_PLUGIN)
    (tmp_path / "good.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n"
        "  - bundle: a.bundle\n    source: {type: speaker, calibration: cal/mic.json, gain: 2}\n"
    )
    (tmp_path / "typo.yaml").write_text(
        "device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n"
        "    source:\n      type: speaker\n      calibration: cal/mic.json\n      gian: 2\n"
    )
    found = _run_python(f"""
        import json, sys, types
        import edge_runtime.sources
        edge_runtime.sources.__path__.append({str(plugins)!r})  # the one new file, in the package's search path

        from edge_runtime.card import ModelCard
        from edge_runtime.config import load_config
        from edge_runtime.sources import SourceUnavailable, create_source, source_class, source_plugins
        from edge_runtime.sources.base import SourceContext
        from edge_runtime.yaml_source import ConfigError

        source = load_config("good.yaml").models[0].source
        try:
            load_config("typo.yaml")
        except ConfigError as error:
            typo = str(error)
        context = SourceContext(card=ModelCard.model_validate(
            {{"name": "m", "input": {{"window": 10, "hop": 5, "rate_hz": 10, "channels": 1}}}}), sink=None)
        try:
            create_source(source, context)
        except SourceUnavailable as error:
            unavailable = str(error)
        sys.modules["edge_test_no_such_audio_lib"] = types.ModuleType("edge_test_no_such_audio_lib")  # installed
        print(json.dumps({{
            "listed": list(source_plugins()), "config": type(source).__name__, "gain": source.gain,
            "calibration": str(source.calibration), "class": source_class("speaker").__name__,
            "created": type(create_source(source, context)).__name__, "typo": typo, "unavailable": unavailable,
        }}))
    """, tmp_path)
    assert found["listed"] == [*BUILT_IN, "speaker"]
    assert found["config"] == "SpeakerSourceConfig" and found["gain"] == 2.0
    assert found["calibration"] == str((tmp_path / "cal/mic.json").resolve())
    assert found["class"] == found["created"] == "SpeakerSource"
    assert f"[{Path('typo.yaml')}:8] models.0.source.gian: unknown key. Did you mean 'gain'?" in found["typo"]
    assert found["unavailable"] == "the speaker source needs edge-test-audio: pip install edge-test-audio"
