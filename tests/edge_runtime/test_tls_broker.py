"""mqtts:// with a private CA, and credentials from a file (never inline), against a real TLS mosquitto."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.broker import MosquittoBroker
from tests.support.daemon import DaemonProcess, wait_until, write_config


def _write_pki(folder):
    """A CA and a server certificate for 127.0.0.1, as a site would issue them."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))
    for name in ("server.key", "server.pem", "ca.pem"):
        (folder / name).chmod(0o644)


def test_daemon_over_tls_with_a_password_file(tmp_path, activity_bundle):
    _write_pki(tmp_path)
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
