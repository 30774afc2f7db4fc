"""The daemon's one MQTT connection: durable publishing through the spool, subscriptions that survive reconnects.

Durable messages are never handed to paho until they are in the spool, and leave the spool only when the broker
confirmed them (PUBACK/PUBCOMP; for QoS 0, when paho wrote them to the socket). A drainer thread sends the spool
in id order with at most `WINDOW` messages in flight and acks the confirmed *prefix*, so a crash never deletes a
message while an earlier one is unconfirmed.

Each connection is a generation: after a reconnect the drainer starts again from the oldest unconfirmed row.
That is at-least-once: paho also re-sends the QoS 1/2 copies it still holds from the previous connection, so up to
`WINDOW` messages per reconnect may arrive twice (consumers de-duplicate by `seq`). For a stream of one QoS >= 1,
the first copies arrive in order. A QoS 0 row unsent at a disconnect is re-sent and may then arrive after newer
QoS 1 rows.

paho pitfalls handled here: callbacks run on paho's thread and must never raise into it nor block on a lock the
drainer holds while inside `client.publish` (the drainer only waits on an Event set by `on_publish`); `on_connect`
runs before paho re-sends its held messages, so subscriptions and the generation switch happen there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.config import BrokerConfig
from edge_runtime.mqtt_client import ClientSettings, create_client, diagnose_tls
from edge_runtime.spool import Spool

log = logging.getLogger("edge_runtime.mqtt")

WINDOW = 100  # durable messages in flight; also paho's max_inflight_messages
PAHO_QUEUE = 10 * WINDOW  # paho's in-memory bound: leftovers of a few dropped connections, then backpressure

Handler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class WillMessage:
    """Published by the broker if the connection drops without a clean disconnect (crash, power cut, network)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class _Subscription:
    """One handler of a topic filter."""

    qos: int
    handler: Handler
    retained: bool  # also deliver retained messages


class _Skipped:
    """Stands in for a message paho refused (an invalid topic in an old spool): counts as done, so the spool moves
    on instead of stopping at a message that can never be sent."""

    def is_published(self) -> bool:
        return True


def client_settings(broker: BrokerConfig, client_id: str) -> ClientSettings:
    """The daemon's config as the shared client settings: MQTT 3.1.1, clean sessions, TCP_NODELAY (with Nagle's
    algorithm a prediction can wait for the broker's delayed ACK on an idle connection)."""
    tls = broker.tls
    username = broker.username or broker.address.username
    return ClientSettings(
        broker.address, client_id, username=username, password=broker.password() if username else None,
        tls=broker.uses_tls, ca_file=tls.ca_file if tls else None, cert_file=tls.cert_file if tls else None,
        key_file=tls.key_file if tls else None, tls_insecure=bool(tls and tls.insecure),
        keepalive_s=broker.keepalive_s, no_delay=True,
    )


def _check_topic(topic: str, qos: int) -> None:
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish to {topic!r}: a topic name must be non-empty and without wildcards")
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos}")


class MqttLink:
    """One paho client plus a drainer thread that moves the spool to the broker; see the module docstring."""

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        spool: Spool,
        will: WillMessage | None,
        on_connect: Callable[[], None] | None = None,
    ):
        self.broker = broker
        self.client_id = client_id
        self.spool = spool
        self.will = will
        self._on_connect_hook = on_connect
        self._client = create_client(client_settings(broker, client_id))
        self._client.on_connect = self._handle_connect
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message
        self._client.max_inflight_messages_set(WINDOW)
        self._client.max_queued_messages_set(PAHO_QUEUE)

        # _conn_lock orders "a new connection began" against the drainer's publish calls: a publish never lands
        # on a connection the drainer has not switched to yet.
        self._conn_lock = threading.Lock()
        self._connected = False
        self._generation = 0
        self._subs_lock = threading.Lock()
        self._subscriptions: dict[str, list[_Subscription]] = {}  # topic filter -> its handlers
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._drainer: threading.Thread | None = None
        self._published = 0
        self._reconnects = 0
        self._ever_connected = False
        self._failing = False
        self._last_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried with backoff, not an error."""
        broker, client = self.broker, self._client
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)
        client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_s)
        client.loop_start()
        self._drainer = threading.Thread(target=self._drain, name=f"mqtt-drainer-{self.client_id}", daemon=True)
        self._drainer.start()

    def stop(self, final: Iterable[tuple[str, bytes, int, bool]] = (), timeout: float = 5.0) -> None:
        """Send `final` (e.g. a retained `stopped` status) directly, wait for it, then disconnect cleanly, which
        tells the broker not to publish the will. Whatever is still spooled stays for the next start."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        if self._drainer is not None:
            self._drainer.join(timeout=max(0.0, deadline - time.monotonic()))
        infos = []
        for topic, payload, qos, retain in final:
            if self._connected:
                infos.append(self._client.publish(topic, payload, qos, retain))
        for info in infos:
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False

    def flush(self, timeout: float) -> bool:
        """Wait until the spool is empty (e.g. at SIGTERM, before `stop`); False if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self.spool.depth() > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(min(remaining, 0.2))
        return True

    # -- publishing -----------------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Durable: spooled first, sent when connected; returns the spool id."""
        _check_topic(topic, qos)
        message_id = self.spool.append(topic, payload, qos, retain)
        self._wake.set()
        return message_id

    def publish_many(self, rows: Iterable[tuple[str, bytes, int, bool]]) -> list[int]:
        """Durable, for a batch (topic, payload, qos, retain): one spool commit for all of them."""
        rows = list(rows)
        for topic, _, qos, _ in rows:
            _check_topic(topic, qos)
        ids = self.spool.append_many(rows)
        self._wake.set()
        return ids

    def publish_direct(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Not spooled (status, command results): False when not connected or paho's queue is full."""
        _check_topic(topic, qos)
        if not self._connected:
            return False
        return self._client.publish(topic, payload, qos, retain).rc == mqtt.MQTT_ERR_SUCCESS

    # -- subscriptions --------------------------------------------------------------------------------------------
    def subscribe(self, topic: str, qos: int, handler: Handler, retained: bool = True) -> None:
        """Remembered and re-subscribed on every connect (sessions are clean); wildcards are fine.

        Several handlers may share one topic filter (two models reading one IMU topic): each gets every message.
        The broker sees one subscription per filter, at the highest QoS any of its handlers asked for; it is
        sent again only when the filter is new or that QoS goes up, because every SUBSCRIBE makes the broker
        re-send the filter's retained message to the handlers already there. (So a handler added to a filter
        that is already subscribed gets no retained message until the next reconnect.) With `retained=False`
        the handler never sees retained messages, which the broker sends at every (re)subscription: a retained
        command must not run again after each reconnect.
        """
        with self._subs_lock:
            entries = self._subscriptions.setdefault(topic, [])
            before = max((entry.qos for entry in entries), default=-1)
            entries.append(_Subscription(qos, handler, retained))
            broker_qos = max(before, qos)
        if self._connected and broker_qos > before:
            self._client.subscribe(topic, broker_qos)

    def unsubscribe(self, topic: str, handler: Handler | None = None) -> None:
        """Remove `handler` from `topic` (None: every handler of it). The broker is told to unsubscribe only when
        the last handler of the filter is gone, so the others keep their messages."""
        with self._subs_lock:
            entries = self._subscriptions.get(topic)
            if entries is None:
                return
            if handler is None:
                entries.clear()
            else:
                # == not `is`: a bound method (source._handle) is a new object at every attribute access
                for index, entry in enumerate(entries):
                    if entry.handler == handler:
                        del entries[index]
                        break
            if entries:
                return
            del self._subscriptions[topic]
        if self._connected:
            self._client.unsubscribe(topic)

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "spool_depth": self.spool.depth(),
            "spool_dropped": self.spool.dropped(),
            "spool_corrupt": self.spool.corrupt,
            "published": self._published,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
        }

    # -- paho callbacks (paho's thread: never raise, never block long) -------------------------------------------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._last_error = f"connection refused: {reason}"
            log.error("MQTT broker %s:%d refused the connection: %s", self.broker.host, self.broker.port, reason)
            return
        with self._conn_lock:
            self._generation += 1
            self._connected = True
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._failing = False
        log.info("MQTT connected to %s:%d as %s (%d spooled)", self.broker.host, self.broker.port, self.client_id,
                 self.spool.depth())
        with self._subs_lock:
            subscriptions = [(topic, max(entry.qos for entry in entries))
                             for topic, entries in self._subscriptions.items()]
        for topic, qos in subscriptions:
            client.subscribe(topic, qos)
        self._wake.set()
        if self._on_connect_hook is not None:
            try:
                self._on_connect_hook()
            except Exception:
                log.exception("on_connect hook failed")

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._last_error = f"cannot connect to {self.broker.host}:{self.broker.port}"
        failing, self._failing = self._failing, True
        if not failing:  # once per outage, not at every retry
            cause = diagnose_tls(client_settings(self.broker, self.client_id)) if self.broker.uses_tls else None
            if cause:
                self._last_error += f": {cause}"
                log.error("MQTT %s; retrying with backoff up to %.0f s", self._last_error, self.broker.reconnect_max_s)
            else:
                log.warning("MQTT %s, retrying with backoff up to %.0f s", self._last_error,
                            self.broker.reconnect_max_s)

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected, self._connected = self._connected, False
        self._wake.set()
        if self._stopping.is_set():
            log.info("MQTT disconnected from %s:%d", self.broker.host, self.broker.port)
        elif was_connected:
            self._last_error = f"connection lost: {reason}"
            log.warning("MQTT connection to %s:%d lost (%s); spooling, %d waiting", self.broker.host,
                        self.broker.port, reason, self.spool.depth())
        else:  # closed before the broker accepted us (after TLS 1.3, a refused client certificate ends here)
            self._handle_connect_fail(client, userdata)

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._wake.set()

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._subs_lock:
            handlers = [entry.handler for topic, entries in self._subscriptions.items()
                        if mqtt.topic_matches_sub(topic, message.topic)
                        for entry in entries if entry.retained or not message.retain]
        for handler in handlers:
            try:
                handler(message.topic, message.payload)
            except Exception:
                log.exception("handler for %s failed", message.topic)

    # -- drainer --------------------------------------------------------------------------------------------------
    def _drain(self) -> None:
        window: deque[tuple[int, mqtt.MQTTMessageInfo | _Skipped]] = deque()
        generation = 0
        last_id = 0
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._ack_prefix(window)
                if self._generation != generation:  # a new connection: start again from the oldest row
                    window.clear()
                    generation, last_id = self._generation, 0
                if not self._connected or len(window) >= WINDOW:
                    continue
                for row in self.spool.peek(WINDOW - len(window), after_id=last_id):
                    with self._conn_lock:
                        if self._stopping.is_set() or not self._connected or self._generation != generation:
                            break
                        try:
                            info = self._client.publish(row.topic, row.payload, row.qos, row.retain)
                        except (ValueError, TypeError) as error:
                            log.error("dropping spooled message %d to %r: %s", row.id, row.topic, error)
                            info = _Skipped()
                    if isinstance(info, mqtt.MQTTMessageInfo) and info.rc != mqtt.MQTT_ERR_SUCCESS:
                        break  # not connected any more, or paho's queue is full: retry after the next wake
                    window.append((row.id, info))
                    last_id = row.id
                self._ack_prefix(window)
            except Exception as error:  # a spool or paho error must not end the thread: retry on the next wake
                self._last_error = f"drainer: {error}"
                log.exception("MQTT drainer error")
                time.sleep(0.5)

    def _ack_prefix(self, window: deque[tuple[int, mqtt.MQTTMessageInfo | _Skipped]]) -> None:
        done = []
        while window and window[0][1].is_published():
            done.append(window.popleft()[0])
        if done:
            self.spool.ack(done)
            self._published += len(done)
            with self._drained:
                self._drained.notify_all()
