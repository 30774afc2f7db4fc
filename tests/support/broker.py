"""A real mosquitto for tests, and a subscriber that records what arrives.

Tests run against the broker the device will talk to, not a mock: reconnects, retained wills and QoS 1 acks are
broker behaviour. mosquitto 2 only accepts anonymous clients with an explicit listener, hence the config file.
`persistence=True` keeps sessions and queued messages across `restart()` (mosquitto saves them at SIGTERM), so a
persistent-session `Collector` misses nothing while the broker is down.

Absence is checked with a sentinel, never with a sleep: "nothing arrived after 0.5 s" passes on a slow machine
without checking anything. `Collector.sync()` publishes a marker that can only arrive after whatever the broker had
for the collector before it, waits for it, and then the test asserts what did not come.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import paho.mqtt.publish as mqtt_publish

Received = tuple[str, bytes, bool]  # topic, payload, retain


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run `make broker` (or `apt-get install -y mosquitto`)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MosquittoBroker:
    """mosquitto on a free loopback port; `restart()` keeps the port, so clients reconnect to the same url."""

    def __init__(self, persistence: bool = False, start: bool = True, extra_config: list[str] | None = None,
                 anonymous: bool = True):
        self.executable = _mosquitto()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.config = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            # Run as root (CI), mosquitto would switch to its own user and could not write the temp dir.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "max_queued_messages 0",  # a stopped collector must not lose a long test stream
            f"persistence {'true' if persistence else 'false'}",
        ]
        if persistence:
            lines += [f"persistence_location {self.dir}/", "autosave_interval 0"]
        lines += extra_config or []
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen([self.executable, "-c", str(self.config)], stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within {timeout} s:\n"
                           f"{self.log.read_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: clients see the connection drop; with persistence, sessions are saved."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)
            self._process.send_signal(signal.SIGCONT)  # a frozen broker handles SIGTERM only once it runs again
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def kill(self) -> None:
        if self.running:
            assert self._process is not None
            self._process.kill()
            self._process.wait(5)
        self._process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts bytes, but nothing is read or acked."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGSTOP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_sentinels(send: Callable[[], None], arrived: Callable[[], bool], timeout: float = 10.0) -> bool:
    """`send()` one sentinel at a time until `arrived()`; False after `timeout` seconds. For a shared subscription,
    where the broker hands each message to one member of the group: send until every member has had one."""
    deadline = time.monotonic() + timeout
    while not arrived():
        if time.monotonic() >= deadline:
            return False
        send()
        settle = time.monotonic() + 0.2
        while not arrived() and time.monotonic() < settle:
            time.sleep(0.01)
    return True


class Collector:
    """A paho subscriber recording (topic, payload, retain) for `topic`; re-subscribes after every reconnect.

    `client_id` with `clean_session=False` gives a persistent session: with a persistent broker, messages sent
    while the collector is away are queued for it.
    """

    def __init__(self, port: int, topic: str, qos: int = 1, client_id: str | None = None,
                 clean_session: bool = True, timeout: float = 5.0):
        self.topic = topic
        self.qos = qos
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._sentinel: bytes | None = None
        self._sentinel_arrived = threading.Event()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{uuid.uuid4()}",
                                   clean_session=clean_session)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.05, 0.2)
        self._client.connect_async("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise RuntimeError(f"collector could not subscribe to {topic!r} on port {port} within {timeout} s")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object
                    ) -> None:
        client.subscribe(self.topic, self.qos)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            if message.payload == self._sentinel:
                self._sentinel_arrived.set()
                return
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        return [payload for _, payload, _ in self.snapshot()]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0) -> bool:
        """True once `predicate(messages)` holds; False after `timeout` seconds. Polls (every 20 ms) rather than
        waking per message, so a predicate over thousands of messages stays cheap."""
        deadline = time.monotonic() + timeout
        while not predicate(self.snapshot()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def sync(self, timeout: float = 10.0, via_port: int | None = None) -> bool:
        """Publish a sentinel on a topic this collector subscribes to and wait for it; True once it arrived.

        From the collector's own client (the default), the broker handles the sentinel after everything this client
        sent before it (its subscription, so the retained messages it got) and after every message the broker had
        already taken from other clients; it sends to the collector in order. So, once the sentinel is here, a
        retained message, or a message published and acknowledged before `sync()`, that was going to arrive has
        arrived. `via_port` publishes it to another broker instead (the far side of a bridge): it then arrives after
        whatever that broker forwarded before it. The sentinel is not recorded in `messages`.
        """
        sentinel = f"sentinel-{uuid.uuid4()}".encode()
        with self._lock:
            self._sentinel = sentinel
            self._sentinel_arrived.clear()
        topic = "/".join("sentinel" if level in ("+", "#") else level for level in self.topic.split("/"))
        if via_port is None:
            self._client.publish(topic, sentinel, qos=self.qos)
        else:
            mqtt_publish.single(topic, sentinel, qos=1, hostname="127.0.0.1", port=via_port)
        return self._sentinel_arrived.wait(timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
