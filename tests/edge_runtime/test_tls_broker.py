"""mqtts:// with a private CA, and credentials from a file (never inline), against a real TLS mosquitto."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.broker import MosquittoBroker
from tests.support.daemon import DaemonProcess, wait_until, write_config
from tests.support.pki import write_pki


@pytest.mark.broker
def test_daemon_over_tls_with_a_password_file(tmp_path, activity_bundle):
    write_pki(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "pi-01", "s3cret"], check=True)
    passwords.chmod(0o644)
    broker = MosquittoBroker(anonymous=False, extra_config=[
        f"cafile {tmp_path / 'ca.pem'}", f"certfile {tmp_path / 'server.pem'}", f"keyfile {tmp_path / 'server.key'}",
        f"password_file {passwords}",
    ])
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    try:
        config = write_config(
            tmp_path / "daemon.yaml", broker_url=f"mqtts://127.0.0.1:{broker.port}", bundle=activity_bundle,
            source={"type": "mqtt", "topic": "sensors/x"},
            extra={"broker": {"username": "pi-01", "password_file": str(secret),
                              "tls": {"ca_file": str(tmp_path / "ca.pem")}}},
        )
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: "MQTT connected" in daemon.output(), 30), daemon.output()
        finally:
            assert daemon.terminate() == 0
        secret.write_text("wrong\n")  # a bad password is a logged, retried connection failure, not a crash
        daemon = DaemonProcess(config.rename(tmp_path / "daemon-wrong-password.yaml"))
        try:
            assert wait_until(lambda: "refused" in daemon.output().lower() or "not authori" in
                              daemon.output().lower(), 30), daemon.output()
            assert "MQTT connected" not in daemon.output()
        finally:
            assert daemon.terminate() == 0
    finally:
        broker.close()
