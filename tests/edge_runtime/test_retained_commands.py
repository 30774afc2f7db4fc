"""A retained command message is not run: it would run again after every reconnect of the daemon."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from tests.support.broker import Collector
from tests.support.control import ControlKey
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

DEVICE = "dev-1"


def publish(port: int, topic: str, payload: bytes, retain: bool) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_retained_command_is_ignored_live_command_runs(tmp_path, broker, activity_bundle):
    key = ControlKey(tmp_path / "keys")
    command = f"edge/{DEVICE}/cmd/info"
    publish(broker.port, command, key.command("info", {"request_id": "stale"}), retain=True)
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "mqtt", "topic": "sensors/dev-1/imu"},
                          extra={"security": {"control_keys": [str(key.public)]}})
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: any(m.get("state") == "online" for m in messages(everything, "/status")), 30), \
                daemon.output()
            # Commands run in arrival order on one thread, and the broker delivers the retained message on
            # subscribe, before `online` is published: once the live command is answered, the retained one
            # would have been answered before it.
            publish(broker.port, command, key.command("info", {"request_id": "live"}), retain=False)
            assert wait_until(lambda: bool(messages(everything, "/cmd/info/result")), 15), daemon.output()
            answered = [result.get("request_id") for result in messages(everything, "/cmd/info/result")]
            assert answered == ["live"], answered
        finally:
            code = daemon.terminate()
    assert code == 0, daemon.output()
