"""Subscribe to a fleet's topics and feed every message into a `FleetState`.

Subscriptions (docs/fleet-protocol.md, "Monitors"; the filters are the contract's `FleetTopics`):
- `<prefix>/+/status` is never shared: it is retained, and every monitor must learn every device from it;
- `<prefix>/+/stats`, `<prefix>/+/drift/+`, `<prefix>/+/deploy/status` carry the volume; with `share_group`
  they are subscribed as `$share/<group>/...`, so the broker gives each message to one monitor of the group
  and N `serve` processes split the load.

The client speaks MQTT v5 (shared subscriptions are part of v5; brokers such as EMQX and HiveMQ also accept them
from v3 clients, v5 is the portable choice) and runs on a `ClientLoop` thread: buffered reads, batched acks,
reconnects with exponential backoff, TCP_NODELAY. QoS 1 for every subscription: a monitor that falls behind
gets the messages queued at the broker instead of losing them (size the broker's queue accordingly).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_fleet.credentials import PASSWORD_ENV, fleet_credentials
from edge_fleet.mqtt_loop import ClientLoop, fast_client
from edge_fleet.state import FleetState
from edge_runtime.contract import FLEET_KINDS, FleetTopics, kind_of, parse_broker_url
from edge_runtime.mqtt_client import ClientSettings

log = logging.getLogger("edge_fleet.monitor")

KINDS = FLEET_KINDS
__all__ = ["PASSWORD_ENV", "FleetMonitor", "subscriptions"]


def subscriptions(prefix: str, share_group: str | None) -> list[tuple[str, int]]:
    """(topic filter, qos) of a monitor; the high-rate ones shared when `share_group` is set."""
    shared = f"$share/{share_group}/" if share_group else ""
    topics = FleetTopics(prefix)
    return [(topics.status_filter, 1), (f"{shared}{topics.stats_filter}", 1), (f"{shared}{topics.drift_filter}", 1),
            (f"{shared}{topics.deploy_status_filter}", 1),
            (topics.snapshot_filter, 1)]  # retained and rare, like status: every monitor keeps the latest


class FleetMonitor:
    """One MQTT v5 connection that keeps `state` current; `start()` returns at once, reconnects by itself."""

    def __init__(self, broker_url: str, state: FleetState, *, share_group: str | None = None,
                 client_id: str | None = None, prefix: str = "edge", keepalive: int = 30,
                 username: str | None = None, password: str | None = None, ca_file: str | None = None):
        if share_group is not None and (not share_group or any(c in share_group for c in "/+#")):
            raise ValueError(f"share group {share_group!r}: a non-empty name without '/', '+' or '#'")
        self.broker_url = broker_url
        self.address = parse_broker_url(broker_url)
        self.host, self.port, self.tls = self.address.host, self.address.port, self.address.tls
        self.state = state
        self.share_group = share_group
        self.prefix = prefix
        self.keepalive = keepalive
        self.client_id = client_id or f"edge-fleet-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._received = dict.fromkeys(KINDS, 0)
        self._garbage = 0
        self._other = 0
        self._connects = 0
        self._subscribed = threading.Event()
        self._loop = ClientLoop(name=f"fleet-monitor-{self.client_id}")
        # the password from the environment (never the URL); TLS: the system's CAs or $EDGE_FLEET_CA_FILE, and a
        # client certificate from $EDGE_FLEET_CERT_FILE / $EDGE_FLEET_KEY_FILE (edge_fleet/credentials.py)
        found = fleet_credentials(self.address, username, password, ca_file)
        client = self._client = fast_client(ClientSettings(
            self.address, self.client_id, protocol="5", username=found.username, password=found.password,
            ca_file=found.ca_file, cert_file=found.cert_file, key_file=found.key_file, keepalive_s=keepalive))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.add(self._client, self.host, self.port, self.keepalive)
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once connected and subscribed (the retained statuses follow right after)."""
        return self._subscribed.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def stats(self) -> dict:
        """Messages received per kind since start, plus unusable ones (`garbage`) and connection counts."""
        return {"received": dict(self._received), "garbage": self._garbage, "other": self._other,
                "connected": self.connected, "connects": self._connects,
                "subscriptions": [topic for topic, _ in subscriptions(self.prefix, self.share_group)]}

    def __enter__(self) -> FleetMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho callbacks (the loop thread) ------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the monitor: %s", self.broker_url, reason)
            return
        self._connects += 1
        if self._connects > 1:
            log.info("reconnected to %s", self.broker_url)
        client.subscribe([(topic, SubscribeOptions(qos=qos)) for topic, qos in
                          subscriptions(self.prefix, self.share_group)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        failed = [str(reason) for reason in reasons if reason.is_failure]
        if failed:
            log.error("broker %s refused subscriptions: %s (shared subscriptions need MQTT v5 support)",
                      self.broker_url, ", ".join(failed))
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._subscribed.clear()
        log.info("disconnected from %s: %s", self.broker_url, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """The fast path: count by kind, hand to the state. Counters are only written on this thread."""
        topic = message.topic
        kind = kind_of(topic)
        if kind is None:
            self._other += 1
            return
        self._received[kind] += 1
        if self.state.ingest(topic, message.payload, message.retain) is None and message.payload:
            self._garbage += 1


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds passed (for commands and tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
