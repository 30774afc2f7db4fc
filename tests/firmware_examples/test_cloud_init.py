"""The Raspberry Pi cloud-init user-data: cloud-init's own schema check (Debian's cloud-init 22.4, offline), every
top-level key known to that schema (the schema check passes a misspelt one), and the config and unit it writes
are this repository's, the config valid for the daemon."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from edge_runtime.config import load_config

REPO = Path(__file__).resolve().parents[2]
USER_DATA = REPO / "firmware_examples" / "raspberry-pi" / "user-data"
CLOUD_INIT = Path(os.environ.get("EDGE_CLOUD_INIT_DIR") or REPO / ".cache" / "firmware-tools" / "cloud-init")
PACKAGES = CLOUD_INIT / "usr" / "lib" / "python3" / "dist-packages"
SCHEMA = PACKAGES / "cloudinit" / "config" / "schemas" / "schema-cloud-config-v1.json"


def cloud_init(*args: str) -> subprocess.CompletedProcess:
    """Debian's cloud-init from the extracted package, on Debian's python3 (which has its dependencies)."""
    assert (CLOUD_INIT / "usr" / "bin" / "cloud-init").is_file(), \
        f"cloud-init is not extracted in {CLOUD_INIT}: run `make firmware-tools`"
    return subprocess.run(["/usr/bin/python3", str(CLOUD_INIT / "usr/bin/cloud-init"), *args], capture_output=True,
                          text=True, env={"PYTHONPATH": str(PACKAGES), "PATH": "/usr/bin:/bin"})


def top_level_keys() -> set[str]:
    """Every key a cloud-config may have at the top: the properties of the schema's module definitions."""
    schema = json.loads(SCHEMA.read_text())
    keys = set()
    for reference in schema["allOf"]:
        keys |= set(schema["$defs"][reference["$ref"].rsplit("/", 1)[1]].get("properties", {}))
    return keys


@pytest.mark.slow
def test_cloud_init_schema_accepts_it():
    result = cloud_init("schema", "--config-file", str(USER_DATA))
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_the_schema_check_catches_a_type_error_but_not_a_misspelt_key(tmp_path):
    wrong_type = tmp_path / "wrong-type"
    wrong_type.write_text(USER_DATA.read_text().replace("ssh_pwauth: false", "ssh_pwauth: [no]"))
    assert cloud_init("schema", "--config-file", str(wrong_type)).returncode != 0
    misspelt = tmp_path / "misspelt"
    misspelt.write_text(USER_DATA.read_text().replace("\nruncmd:", "\nruncmds:"))
    assert cloud_init("schema", "--config-file", str(misspelt)).returncode == 0  # why the key check exists
    assert "runcmds" not in top_level_keys() and "runcmd" in top_level_keys()


@pytest.mark.slow
def test_every_top_level_key_is_one_cloud_init_knows():
    document = yaml.safe_load(USER_DATA.read_text())
    unknown = sorted(set(document) - top_level_keys())
    assert not unknown, f"unknown top-level keys (cloud-init would ignore them): {unknown}"


def test_it_writes_this_repositorys_config_and_unit_and_installs_the_daemon(tmp_path, monkeypatch):
    assert USER_DATA.read_text().startswith("#cloud-config\n")
    document = yaml.safe_load(USER_DATA.read_text())
    files = {entry["path"]: entry for entry in document["write_files"]}
    config = files["/etc/edge-runtime/config.yaml"]["content"]
    assert config == (REPO / "firmware_examples" / "raspberry-pi" / "config.yaml").read_text()
    unit = files["/etc/systemd/system/edge-runtime.service"]["content"]
    assert unit == (REPO / "firmware_examples" / "systemd" / "edge-runtime.service").read_text()
    assert files["/etc/edge-runtime/mqtt-password"]["permissions"] == "0600"
    monkeypatch.delenv("MQTT_PASSWORD_FILE", raising=False)
    (tmp_path / "config.yaml").write_text(config)
    loaded = load_config(tmp_path / "config.yaml")  # the daemon's own schema
    assert loaded.board is None and loaded.models[0].source.type == "iio"  # the board is detected
    users = {user["name"]: user for user in document["users"] if isinstance(user, dict)}
    assert users["edge-runtime"]["system"] is True and "i2c" in users["edge-runtime"]["groups"]
    commands = [" ".join(command) if isinstance(command, list) else command for command in document["runcmd"]]
    assert "python3 -m venv /opt/edge-runtime" in commands
    assert "systemctl enable edge-runtime.service" in commands
