"""FleetMonitor against a real mosquitto: devices appear, go offline by their last will, shared subscriptions split
the high-rate topics without losing or doubling a message, reconnects, and the real daemon's messages."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from edge_fleet.monitor import FleetMonitor, subscriptions, wait_for
from edge_fleet.state import FleetState
from tests.support.broker import MosquittoBroker, send_sentinels
from tests.support.fleet_sim import SimulatorProcess, in_state, online, running_monitor
from tests.support.pki import write_pki

KEEPALIVE = 2


class Publisher:
    """A plain paho client publishing what a test needs, waiting for every QoS 1 ack."""

    def __init__(self, port: int):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def send_all(self, messages: list[tuple[str, bytes, bool]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status(device: str, state: str = "online") -> bytes:
    return json.dumps({"state": state, "schema": 1, "device_id": device, "group": "lab",
                       "models": [{"name": "m", "version": "1", "backend": {"active": "onnxruntime"}}]}).encode()


def stats(device: str, seq: int) -> bytes:
    return json.dumps({"device_id": device, "seq": seq, "models": {"m": {"throughput_per_s": float(seq)}}}).encode()


def test_subscriptions_share_only_the_high_rate_topics():
    assert subscriptions("edge", None) == [("edge/+/status", 1), ("edge/+/stats", 1), ("edge/+/drift/+", 1),
                                           ("edge/+/deploy/status", 1), ("edge/+/snapshot/+", 1)]
    shared = [topic for topic, _ in subscriptions("edge", "dash")]
    assert shared == ["edge/+/status", "$share/dash/edge/+/stats", "$share/dash/edge/+/drift/+",
                      "$share/dash/edge/+/deploy/status", "edge/+/snapshot/+"]
    with pytest.raises(ValueError):
        FleetMonitor("mqtt://127.0.0.1:1", FleetState(), share_group="a/b")


def test_simulated_devices_appear_and_go_offline_within_keepalive_when_killed(broker):
    devices = 40
    with running_monitor(broker.url) as (monitor, state), SimulatorProcess(
            broker.url, devices, "--keepalive", str(KEEPALIVE), "--rate-hz", "2") as sim:
        assert wait_for(lambda: online(state) == devices, 20), sim.output()
        assert wait_for(lambda: all(d.models and d.models["activity"].throughput_per_s is not None
                                    for d in state.devices()), 10)
        device = state.devices()[0]
        assert device.models["activity"].version == "1.0.0"
        assert device.board and device.version
        sim.kill()
        killed = time.monotonic()
        # the broker publishes the wills; the bound is the protocol's (1.5 x keepalive), not a speed claim
        assert wait_for(lambda: in_state(state, "offline") == devices, 1.5 * KEEPALIVE), (
            f"{in_state(state, 'offline')} of {devices} offline after {time.monotonic() - killed:.1f} s")
        assert online(state) == 0
        assert {alert["kind"] for alert in state.alerts()} >= {"offline"}
        counts = monitor.stats()["received"]
        assert counts["status"] >= 2 * devices and counts["stats"] > 0
        assert monitor.stats()["garbage"] == 0


def test_frozen_devices_go_offline_when_the_broker_gives_up_on_their_keepalive(broker):
    """SIGSTOP keeps the sockets open (a board that hangs, or a cable pulled without a FIN): only the broker's
    keepalive check (1.5 x keepalive) publishes the wills."""
    devices = 10
    with running_monitor(broker.url) as (_, state), SimulatorProcess(
            broker.url, devices, "--keepalive", str(KEEPALIVE)) as sim:
        assert wait_for(lambda: online(state) == devices, 20), sim.output()
        sim.process.send_signal(signal.SIGSTOP)
        # mosquitto 2.0 keeps time in whole seconds and checks about once a second: 4.2-5.8 s were measured for
        # a 3 s (1.5 x keepalive) limit, so the bound has 4 s of slack
        assert wait_for(lambda: in_state(state, "offline") == devices, 1.5 * KEEPALIVE + 4.0)


def test_two_monitors_in_a_share_group_split_stats_exactly_once_and_both_know_every_device(broker):
    devices, messages = 25, 3000
    publisher = Publisher(broker.port)
    try:
        publisher.send_all([(f"edge/d{i:02d}/status", status(f"d{i:02d}"), True) for i in range(devices)])
        with running_monitor(broker.url, share_group="dash") as (first, first_state), \
                running_monitor(broker.url, share_group="dash") as (second, second_state), \
                running_monitor(broker.url) as (alone, _):
            # retained status is not shared: both monitors know every device
            assert wait_for(lambda: len(first_state) == devices and len(second_state) == devices, 10)
            assert online(first_state) == online(second_state) == devices
            publisher.send_all([(f"edge/d{n % devices:02d}/stats", stats(f"d{n % devices:02d}", n), False)
                                for n in range(messages)])

            def shared_total() -> int:
                return first.stats()["received"]["stats"] + second.stats()["received"]["stats"]

            assert wait_for(lambda: shared_total() >= messages and alone.stats()["received"]["stats"] >= messages,
                            30), (first.stats(), second.stats(), alone.stats())
            # A duplicate would come before a sentinel published after every stats message was acked (same
            # publisher, same QoS). Sentinels go on another shared kind (drift) so the stats counts stay exact; the
            # group hands each to one member, so they are sent until all three monitors have had one.
            assert send_sentinels(lambda: publisher.send_all([("edge/sentinel/drift/m", b"{}", False)]),
                                  lambda: all(m.stats()["received"]["drift"] for m in (first, second, alone)))
            split = (first.stats()["received"]["stats"], second.stats()["received"]["stats"])
            assert sum(split) == messages, split
            assert min(split) > 0, split
            assert alone.stats()["received"]["stats"] == messages  # unshared: gets everything
    finally:
        publisher.close()


def test_garbage_over_the_wire_is_counted(broker):
    publisher = Publisher(broker.port)
    try:
        with running_monitor(broker.url) as (monitor, state):
            publisher.send_all([("edge/pi-01/status", status("pi-01"), False), ("edge/pi-01/stats", b"{oops", False),
                                ("edge/pi-01/status", json.dumps({"state": "online", "schema": 9}).encode(), False),
                                ("edge/pi-01/predictions/m", b"{}", False)])
            assert wait_for(lambda: state.snapshot()["unknown_schema"] == 1 and monitor.stats()["garbage"] == 1, 10)
            assert state.device("pi-01").problems == 2
            assert monitor.stats()["received"] == {"status": 2, "stats": 1, "drift": 0, "deploy": 0,
                                                     "snapshot": 0}
    finally:
        publisher.close()


@pytest.mark.broker
def test_monitor_reconnects_and_resubscribes_after_a_broker_restart():
    with MosquittoBroker(persistence=True) as restarting:
        publisher = None
        with running_monitor(restarting.url) as (monitor, state):
            restarting.restart()
            assert wait_for(lambda: monitor.wait_ready(0) and monitor.stats()["connects"] >= 2, 15), monitor.stats()
            publisher = Publisher(restarting.port)
            publisher.send_all([("edge/after/status", status("after"), True)])
            assert wait_for(lambda: state.device("after") is not None, 10)
        if publisher is not None:
            publisher.close()


def test_a_real_daemon_is_seen_with_its_model_and_numbers(broker, tmp_path, activity_bundle, activity_recording):
    from tests.support.daemon import DaemonProcess, write_config

    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "replay", "path": str(activity_recording), "speed": 20, "loop": True},
                          device_id="pi-real", extra={"group": "bench"})
    with running_monitor(broker.url) as (_, state):
        daemon = DaemonProcess(config)
        try:
            assert wait_for(lambda: (d := state.device("pi-real")) is not None and d.online, 30), daemon.output()
            assert wait_for(lambda: any(m.throughput_per_s for m in state.device("pi-real").models.values()), 20)
            device = state.device("pi-real")
            assert device.group == "bench"
            (model,) = device.models.values()
            assert model.sha256 and model.precision and model.backend
            assert model.latency_p95_ms is not None and device.rss_mb is not None
            assert device.problems == 0 and state.snapshot()["unknown_schema"] == 0
            assert daemon.terminate() == 0
            assert wait_for(lambda: state.device("pi-real").state == "stopped", 10)
        finally:
            daemon.close()


def test_messages_larger_than_one_buffered_read_arrive_whole(broker):
    """The monitor reads 256 KiB at a time; a message spanning several reads must come out whole, in order."""
    publisher = Publisher(broker.port)
    big = json.dumps({"state": "online", "schema": 1, "group": "lab", "padding": "x" * 700_000}).encode()
    try:
        with running_monitor(broker.url) as (monitor, state):
            publisher.send_all([("edge/big/status", big, False), ("edge/big/stats", stats("big", 7), False)] * 3)
            assert wait_for(lambda: monitor.stats()["received"]["stats"] == 3, 10), monitor.stats()
            device = state.device("big")
            assert (device.online, device.group, device.problems) == (True, "lab", 0)
            assert device.models["m"].throughput_per_s == 7.0
    finally:
        publisher.close()


@pytest.mark.broker
def test_mqtts_with_a_private_ca_and_a_password_from_the_environment(tmp_path, monkeypatch):
    write_pki(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "fleet", "s3cret"], check=True)
    passwords.chmod(0o644)
    monkeypatch.setenv("EDGE_FLEET_MQTT_PASSWORD", "s3cret")
    with MosquittoBroker(anonymous=False, extra_config=[
            f"cafile {tmp_path / 'ca.pem'}", f"certfile {tmp_path / 'server.pem'}",
            f"keyfile {tmp_path / 'server.key'}", f"password_file {passwords}"]) as secure:
        state = FleetState()
        monitor = FleetMonitor(f"mqtts://fleet@127.0.0.1:{secure.port}", state, ca_file=str(tmp_path / "ca.pem"))
        monitor.start()
        try:
            assert monitor.wait_ready(10)
            publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-publisher")
            publisher.username_pw_set("fleet", "s3cret")
            publisher.tls_set(ca_certs=str(tmp_path / "ca.pem"))
            publisher.connect("127.0.0.1", secure.port)
            publisher.loop_start()
            try:
                for n in range(5):  # a device is tracked once its status announced it
                    publisher.publish(f"edge/t{n}/status", json.dumps({"state": "online", "device_id": f"t{n}"}),
                                      qos=1)
                for n in range(200):  # more than one TLS record: what the buffered reads must not lose
                    publisher.publish(f"edge/t{n % 5}/stats", stats(f"t{n % 5}", n), qos=1)
                assert wait_for(lambda: monitor.stats()["received"]["stats"] == 200, 10), monitor.stats()
                assert len(state) == 5
            finally:
                publisher.disconnect()
                publisher.loop_stop()
        finally:
            monitor.stop()
