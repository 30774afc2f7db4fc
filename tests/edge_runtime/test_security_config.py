"""The security settings as the daemon reads them: trusted keys force signatures, running unsigned is a warning in
the log and the status document, a password over mqtt:// is a warning."""

from __future__ import annotations

import json
import logging

from edge_runtime.config import BrokerConfig, DaemonConfig
from edge_runtime.daemon import Daemon
from edge_runtime.signing import generate_keypair


def config(tmp_path, **security) -> DaemonConfig:
    return DaemonConfig.model_validate({
        "device_id": "dev-1", "broker": "mqtt://127.0.0.1:1", "board": "x86_64", "security": security,
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "models": [{"bundle": str(tmp_path / "m.bundle"), "source": {"type": "mqtt", "topic": "x"}}]})


def test_running_unsigned_is_a_loud_warning_in_the_log_and_the_status(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_runtime.daemon"):
        daemon = Daemon(config(tmp_path))
    assert "SECURITY WARNING: UNSIGNED BUNDLES ACCEPTED" in caplog.text
    status = json.loads(daemon.status("online"))
    assert status["security"]["bundle_signatures"] == "not required"
    assert status["security"]["control"] == "disabled"
    assert any("UNSIGNED" in warning for warning in status["security"]["warnings"])


def test_trusted_keys_require_signatures_whatever_require_signature_says(tmp_path):
    _, public = generate_keypair("release", tmp_path)
    daemon = Daemon(config(tmp_path, trusted_keys=[str(public)], require_signature=False,
                           control_keys=[str(public)]))
    assert daemon.require_signature is True and daemon.models.require_signature is True
    status = json.loads(daemon.status("online"))["security"]
    assert status == {"bundle_signatures": "required", "control": "signed", "unsigned_info": False, "warnings": []}


def test_a_password_over_mqtt_is_a_warning():
    clear = BrokerConfig(url="mqtt://broker:1883", username="pi", password_env="PASSWORD")
    assert "clear text" in clear.cleartext_password_warning()
    assert BrokerConfig(url="mqtts://broker:8883", username="pi", password_env="P").cleartext_password_warning() is None
    assert BrokerConfig(url="mqtt://broker:1883").cleartext_password_warning() is None
