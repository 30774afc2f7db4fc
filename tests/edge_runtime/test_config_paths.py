"""load_config: every relative path in a config is relative to the config file; model names are topic-safe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from edge_runtime.config import load_config
from edge_runtime.yaml_source import ConfigError


def _write(folder: Path, **extra: object) -> Path:
    config = {
        "device_id": "pi-01",
        "broker": {
            "url": "mqtts://127.0.0.1:8883",
            "username": "pi-01",
            "password_file": "secrets/password",
            "tls": {"ca_file": "pki/ca.pem", "cert_file": "pki/client.pem", "key_file": "pki/client.key"},
        },
        "board": "boards/my-pi.yaml",
        "spool": {"path": "state/spool.sqlite"},
        "security": {"trusted_keys": ["keys/"]},
        "models": [{
            "bundle": "bundles/activity.bundle",
            "source": {"type": "replay", "path": "data/walk.csv"},
            "backends": [
                {"type": "onnxruntime", "providers": ["TensorrtExecutionProvider"], "trt_engine_cache": "trt"},
                {"type": "tflite"},
            ],
        }],
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """The daemon starts in another directory than the config's (systemd starts it in /)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_every_relative_path_is_relative_to_the_config_file(tmp_path, elsewhere):
    folder = (tmp_path / "etc" / "edge").resolve()
    config = load_config(_write(folder))
    broker = config.broker
    assert broker.password_file == folder / "secrets/password"
    assert broker.tls is not None
    assert broker.tls.ca_file == folder / "pki/ca.pem"
    assert broker.tls.cert_file == folder / "pki/client.pem"
    assert broker.tls.key_file == folder / "pki/client.key"
    assert config.board == str(folder / "boards/my-pi.yaml")
    model = config.models[0]
    assert model.backends is not None
    assert model.backends[0].trt_engine_cache == folder / "trt"
    # the ones that were already rebased stay so
    assert model.bundle == folder / "bundles/activity.bundle"
    assert model.source.path == folder / "data/walk.csv"
    assert config.spool.path == folder / "state/spool.sqlite"
    assert config.security.trusted_keys == [folder / "keys"]


def test_password_file_is_read_from_next_to_the_config(tmp_path, elsewhere):
    folder = tmp_path / "etc"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "password").write_text("s3cret\n")
    assert load_config(_write(folder)).broker.password() == "s3cret"


def test_absolute_paths_and_board_names_are_kept(tmp_path, elsewhere):
    absolute = tmp_path / "abs"
    broker = {"url": "mqtts://127.0.0.1:8883", "password_file": str(absolute / "pw"),
              "tls": {"ca_file": str(absolute / "ca")}}
    config = load_config(_write(tmp_path / "etc", board="raspberry-pi-4", broker=broker))
    assert config.board == "raspberry-pi-4"  # a device_configs name, not a file next to the config
    assert config.broker.password_file == absolute / "pw"
    assert config.broker.tls is not None and config.broker.tls.ca_file == absolute / "ca"
    assert config.broker.tls.cert_file is None and config.broker.tls.key_file is None


def test_a_board_yml_file_and_a_broker_without_tls(tmp_path, elsewhere):
    config = load_config(_write(tmp_path / "etc", board="my-board.yml", broker="mqtt://127.0.0.1:1883"))
    assert config.board == str((tmp_path / "etc" / "my-board.yml").resolve())
    assert config.broker.tls is None and config.broker.password_file is None
    assert os.getcwd() == str(elsewhere)


@pytest.mark.parametrize("name", ["wrist/left", "imu+", "all#", "", "-lead", ".hidden", "two words"])
def test_a_model_name_must_be_topic_safe(tmp_path, name):
    path = _write(tmp_path, models=[{"bundle": "a.bundle", "name": name,
                                     "source": {"type": "mqtt", "topic": "sensors/imu"}}])
    with pytest.raises(ConfigError, match="name"):
        load_config(path)


@pytest.mark.parametrize("name", ["wrist", "wrist_left-2", "activity.v2", "A1"])
def test_topic_safe_model_names_are_accepted(tmp_path, name):
    path = _write(tmp_path, models=[{"bundle": "a.bundle", "name": name,
                                     "source": {"type": "mqtt", "topic": "sensors/imu"}}])
    assert load_config(path).models[0].name == name
