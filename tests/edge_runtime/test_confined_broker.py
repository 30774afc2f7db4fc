"""The broker setup of docs/security.md, for real: mosquitto with a private CA, client certificates (mTLS), a
password file and the ACL shipped in docs/broker/acl. The daemon and the fleet monitor work there; a device cannot
publish into another device's topics or command channel (the broker answers "not authorized" and drops the
connection) nor read them; a certificate from another CA is refused,
and the daemon says so in one line."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_fleet.command import send_command
from edge_fleet.monitor import FleetMonitor
from edge_fleet.state import FleetState
from tests.support.broker import MosquittoBroker
from tests.support.control import ControlKey
from tests.support.daemon import DaemonProcess, wait_until, write_config
from tests.support.pki import write_client, write_pki
from tests.support.tiers import tier

ACL = Path(__file__).resolve().parents[2] / "docs" / "broker" / "acl"
PASSWORDS = {"dev-1": "p-dev-1", "dev-2": "p-dev-2", "fleet": "p-fleet"}
NOT_AUTHORIZED = 135


@pytest.fixture
@tier("broker")
def confined(tmp_path):
    write_pki(tmp_path)
    for name in PASSWORDS:
        write_client(tmp_path, name)
    (tmp_path / "rogue").mkdir()
    write_client(tmp_path / "rogue", "dev-1")  # the right name, signed by a CA the broker does not know
    passwd = tmp_path / "passwd"
    for index, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if index == 0 else []), "-b", str(passwd), user, password],
                       check=True)
    passwd.chmod(0o644)
    broker = MosquittoBroker(anonymous=False, extra_config=[
        f"cafile {tmp_path / 'ca.pem'}", f"certfile {tmp_path / 'server.pem'}", f"keyfile {tmp_path / 'server.key'}",
        "require_certificate true", "use_identity_as_username false", f"password_file {passwd}",
        f"acl_file {ACL}"])
    try:
        yield broker, tmp_path
    finally:
        broker.close()


def device_config(folder: Path, broker, bundle: Path, recording: Path, key: ControlKey, cert: Path) -> Path:
    secret = folder / "dev-1.password"
    secret.write_text(PASSWORDS["dev-1"])
    return write_config(
        folder / "daemon.yaml", broker_url=f"mqtts://127.0.0.1:{broker.port}", bundle=bundle, device_id="dev-1",
        source={"type": "replay", "path": str(recording), "speed": 20, "loop": True},
        extra={"broker": {"username": "dev-1", "password_file": str(secret),
                          "tls": {"ca_file": str(folder / "ca.pem"), "cert_file": str(cert),
                                  "key_file": str(cert.with_suffix(".key"))}},
               "security": {"control_keys": [str(key.public)]}})


class Client:
    """A paho MQTT v5 client with a certificate and a password; records PUBACK/SUBACK reason codes."""

    def __init__(self, broker, folder: Path, user: str):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.tls_set(ca_certs=str(folder / "ca.pem"), certfile=str(folder / f"{user}.pem"),
                            keyfile=str(folder / f"{user}.key"))
        self.acks: dict[int, int] = {}
        self.received: list[str] = []
        self.granted: dict[int, list[int]] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.on_message = lambda client, userdata, message: self.received.append(message.topic)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{user} could not connect"

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self.lock:
            self.acks[mid] = reason.value

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        with self.lock:
            self.granted[mid] = [reason.value for reason in reasons]

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: info.mid in self.acks, 10), topic
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> int:
        """The SUBACK's reason code (mosquitto grants a wildcard and filters each message by the ACL)."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert wait_until(lambda: mid in self.granted, 10), topic
        return self.granted[mid][0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_devices_are_confined_to_their_own_topics(confined, activity_bundle, activity_recording, monkeypatch):
    broker, folder = confined
    key = ControlKey(folder / "keys")
    config = device_config(folder, broker, activity_bundle, activity_recording, key, folder / "dev-1.pem")
    monkeypatch.setenv("EDGE_FLEET_MQTT_PASSWORD", PASSWORDS["fleet"])
    monkeypatch.setenv("EDGE_FLEET_CERT_FILE", str(folder / "fleet.pem"))
    monkeypatch.setenv("EDGE_FLEET_KEY_FILE", str(folder / "fleet.key"))
    monkeypatch.setenv("EDGE_FLEET_CA_FILE", str(folder / "ca.pem"))
    state = FleetState()
    monitor = FleetMonitor(f"mqtts://fleet@127.0.0.1:{broker.port}", state)
    monitor.start()
    daemon = DaemonProcess(config)
    hostile = None
    try:
        assert monitor.wait_ready(10)
        online = lambda: (state.device("dev-1") is not None and state.device("dev-1").online  # noqa: E731
                          and state.device("dev-1").models.get("activity") is not None)
        assert wait_until(online, 60), daemon.output()
        assert wait_until(lambda: state.device("dev-1").models["activity"].throughput_per_s, 30)

        # the fleet may command the device through the ACL
        result = send_command(f"mqtts://fleet@127.0.0.1:{broker.port}", "dev-1", "info", {},
                              control_key=key.private, timeout_s=20)
        assert result is not None and result["ok"] is True, result

        # dev-2, a device of the same fleet with a valid certificate and password, turns hostile. mosquitto answers
        # a denied publish with "not authorized" and then closes that client's connection: one client per attempt
        offline = json.dumps({"state": "offline", "schema": 1, "device_id": "dev-1", "group": None}).encode()
        for topic, payload in (("edge/dev-1/cmd/reload", b'{"bundle": "/tmp/x"}'), ("edge/dev-1/status", offline),
                               ("edge/dev-1/deploy/request", b"{}"), ("edge/bundles/ab/chunk/0", b"x"),
                               ("edge/dev-1/predictions/activity", b'{"seq": 1}'), ("sensors/dev-1/imu", b"{}")):
            hostile = Client(broker, folder, "dev-2")
            try:
                assert hostile.publish(topic, payload) == NOT_AUTHORIZED, topic
            finally:
                hostile.close()
        hostile = Client(broker, folder, "dev-2")
        hostile.subscribe("edge/dev-1/#")  # granted, but the ACL filters what is delivered
        hostile.subscribe("edge/+/cmd/+")
        seen = monitor.stats()["received"]["stats"]  # sentinel: dev-1's stats keep passing through the broker
        assert wait_until(lambda: monitor.stats()["received"]["stats"] >= seen + 3, 20)
        assert hostile.received == [], hostile.received[:3]
        # its own status is allowed: once the fleet has it, anything dev-2 sent before would have arrived too
        own = json.dumps({"state": "online", "schema": 1, "device_id": "dev-2"}).encode()
        assert hostile.publish("edge/dev-2/status", own) == 0
        assert wait_until(lambda: state.device("dev-2") is not None, 10)
        assert state.device("dev-1").online, "dev-2 turned dev-1 offline"
        assert "cmd/reload" not in daemon.output()  # the daemon never saw the command
    finally:
        if hostile is not None:
            hostile.close()
        monitor.stop()
        assert daemon.terminate() == 0, daemon.output()


def test_a_certificate_from_another_ca_is_refused_with_a_clear_error(confined, activity_bundle, activity_recording):
    broker, folder = confined
    rogue = folder / "rogue" / "dev-1.pem"
    config = device_config(folder, broker, activity_bundle, activity_recording, ControlKey(folder / "keys"), rogue)
    daemon = DaemonProcess(config)
    try:
        assert wait_until(lambda: "TLS handshake failed" in daemon.output(), 30), daemon.output()
        assert "the broker refused this device's certificate" in daemon.output()
        assert "MQTT connected" not in daemon.output()
    finally:
        assert daemon.terminate() == 0, daemon.output()
