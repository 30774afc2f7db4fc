"""The MQTT link against a real mosquitto: nothing lost or reordered across broker outages, restarts and kills."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from edge_runtime.config import BrokerConfig
from edge_runtime.mqtt_link import MqttLink, WillMessage
from edge_runtime.spool import Spool
from tests.support.broker import Collector, MosquittoBroker

REPO = Path(__file__).resolve().parents[2]

MakeLink = Callable[..., MqttLink]


def _broker_config(url: str) -> BrokerConfig:
    return BrokerConfig(url=url, keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5)


@pytest.fixture
def make_link() -> Iterator[MakeLink]:
    """Started links, all stopped at teardown even when the test failed."""
    links: list[MqttLink] = []

    def make(url: str, spool: Spool, will: WillMessage | None = None, client_id: str = "link", **kwargs) -> MqttLink:
        link = MqttLink(_broker_config(url), client_id, spool, will, **kwargs)
        link.start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop(timeout=2.0)


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _first_copies(payloads: list[bytes]) -> list[int]:
    """The stream as a consumer sees it after de-duplicating by seq (at-least-once delivery)."""
    return list(dict.fromkeys(int(p) for p in payloads))


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        process.kill()
        raise AssertionError(f"child printed nothing within {timeout} s")
    return process.stdout.readline().strip()


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL


# -- delivery -------------------------------------------------------------------------------------------------
@pytest.mark.broker
def test_messages_published_while_the_broker_is_down_arrive_in_order(tmp_path, make_link):
    with MosquittoBroker(persistence=True) as broker, \
            Collector(broker.port, "down/#", client_id="down-collector", clean_session=False) as collector:
        broker.stop()  # the collector's session (and subscription) waits in the broker's persistence file
        link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 1000))
        for i in range(100):
            link.publish("down/seq", str(i).encode())
        link.publish_many([("down/seq", str(i).encode(), 1, False) for i in range(100, 200)])
        assert not link.connected
        assert link.stats()["spool_depth"] == 200
        broker.start()
        assert collector.wait_for(lambda m: len(m) >= 200, timeout=10)
        assert [int(p) for p in collector.payloads()] == list(range(200))  # never connected before: no duplicates
        assert link.flush(5.0)
        assert link.stats()["published"] == 200


@pytest.mark.broker
def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(tmp_path, make_link):
    n = 2000
    with MosquittoBroker(persistence=True) as broker, \
            Collector(broker.port, "stream/#", client_id="stream-collector", clean_session=False) as collector:
        link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 10_000))

        def produce() -> None:
            for i in range(n):
                link.publish("stream/seq", str(i).encode())
                if i % 20 == 19:
                    time.sleep(0.01)  # a stream, not one burst: the restart lands in the middle of it

        producer = threading.Thread(target=produce)
        producer.start()
        assert collector.wait_for(lambda m: len(m) >= 300, timeout=10)
        broker.restart()
        producer.join(20)
        assert collector.wait_for(lambda m: len({p for _, p, _ in m}) >= n, timeout=15)
        assert _first_copies(collector.payloads()) == list(range(n))
        assert link.flush(5.0)
        assert link.stats()["reconnects"] >= 1


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path, broker, make_link):
    spool = Spool(tmp_path / "spool.sqlite", max_messages=10)
    spool.append_many([("bound/seq", str(i).encode(), 1, False) for i in range(30)])  # a long outage
    with Collector(broker.port, "bound/#") as collector:
        link = make_link(broker.url, spool)
        assert collector.wait_for(lambda m: len(m) >= 10, timeout=5)
        assert link.flush(5.0)
        assert [int(p) for p in collector.payloads()] == list(range(20, 30))
        assert link.stats()["spool_dropped"] == 20


SPOOL_THEN_DIE = """
import sys, time
from pathlib import Path
from edge_runtime.config import BrokerConfig
from edge_runtime.mqtt_link import MqttLink
from edge_runtime.spool import Spool

link = MqttLink(BrokerConfig(url=sys.argv[1], reconnect_min_s=0.1, reconnect_max_s=0.5), "child",
                Spool(Path(sys.argv[2]), 10_000), None)
link.start()
for i in range(300):
    link.publish("killed/seq", str(i).encode())
print("spooled", link.connected, flush=True)
time.sleep(60)
"""


def test_spool_survives_sigkill_and_a_new_link_delivers_everything(tmp_path, broker, make_link):
    broker.stop()
    path = tmp_path / "spool.sqlite"
    child = _spawn(SPOOL_THEN_DIE, broker.url, str(path))
    assert _read_line(child, timeout=20) == "spooled False"
    _kill(child)
    broker.start()
    with Collector(broker.port, "killed/#") as collector:
        link = make_link(broker.url, Spool(path, 10_000))
        assert collector.wait_for(lambda m: len(m) >= 300, timeout=10)
        assert [int(p) for p in collector.payloads()] == list(range(300))
        assert link.flush(5.0)


CONNECT_PUBLISH_DIE = """
import sys, time
from pathlib import Path
from edge_runtime.config import BrokerConfig
from edge_runtime.mqtt_link import MqttLink
from edge_runtime.spool import Spool

link = MqttLink(BrokerConfig(url=sys.argv[1]), "unconfirmed", Spool(Path(sys.argv[2]), 10_000), None)
link.start()
deadline = time.monotonic() + 10
while not link.connected and time.monotonic() < deadline:
    time.sleep(0.02)
print("connected" if link.connected else "not connected", flush=True)
sys.stdin.readline()  # the broker is frozen now
for i in range(50):
    link.publish("unconfirmed/seq", str(i).encode())
time.sleep(0.5)  # the drainer hands them to paho, paho writes them into the frozen broker's socket
print("sent", link.stats()["spool_depth"], flush=True)
time.sleep(60)
"""


def test_a_message_leaves_the_spool_only_when_the_broker_confirmed_it(tmp_path, broker, make_link):
    path = tmp_path / "spool.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CONNECT_PUBLISH_DIE, broker.url, str(path)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert _read_line(child, timeout=20) == "connected"
        broker.freeze()
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert _read_line(child, timeout=10) == "sent 50"  # written to the socket, never acked: still spooled
        _kill(child)
    finally:
        child.kill()
    broker.kill()  # what the frozen broker had read is gone with it
    broker.start()
    with Collector(broker.port, "unconfirmed/#") as collector:
        link = make_link(broker.url, Spool(path, 10_000))
        assert collector.wait_for(lambda m: len(m) >= 50, timeout=10)
        assert [int(p) for p in collector.payloads()] == list(range(50))
        assert link.flush(5.0)


# -- will and clean stop ---------------------------------------------------------------------------------------
CONNECT_THEN_WAIT = """
import sys, time
from pathlib import Path
from edge_runtime.config import BrokerConfig
from edge_runtime.mqtt_link import MqttLink, WillMessage
from edge_runtime.spool import Spool

link = MqttLink(BrokerConfig(url=sys.argv[1], keepalive_s=5), "doomed", Spool(Path(sys.argv[2]), 100),
                WillMessage("dev/doomed/status", b"offline", 1, True),
                on_connect=lambda: link.publish_direct("dev/doomed/status", b"online", 1, True))
link.start()
deadline = time.monotonic() + 10
while not link.connected and time.monotonic() < deadline:
    time.sleep(0.02)
print("connected" if link.connected else "not connected", flush=True)
time.sleep(60)
"""


def test_last_will_is_published_retained_when_the_process_is_killed(tmp_path, broker):
    with Collector(broker.port, "dev/doomed/status") as live:
        child = _spawn(CONNECT_THEN_WAIT, broker.url, str(tmp_path / "spool.sqlite"))
        assert _read_line(child, timeout=20) == "connected"
        assert live.wait_for(lambda m: b"online" in [p for _, p, _ in m], timeout=5)
        _kill(child)
        assert live.wait_for(lambda m: m[-1][1] == b"offline", timeout=10)
    with Collector(broker.port, "dev/doomed/status") as late:  # a subscriber that comes later sees it retained
        assert late.wait_for(lambda m: len(m) >= 1, timeout=5)
        assert late.messages[0] == ("dev/doomed/status", b"offline", True)


def test_clean_stop_publishes_final_messages_and_not_the_will(tmp_path, broker):
    status = "dev/calm/status"
    with Collector(broker.port, "dev/calm/#") as live:
        link = MqttLink(_broker_config(broker.url), "calm", Spool(tmp_path / "spool.sqlite", 100),
                        WillMessage(status, b"offline", 1, True))
        link.start()
        assert _until(lambda: link.connected, timeout=5)
        link.publish("dev/calm/prediction", b"1")
        assert link.flush(5.0)
        link.stop(final=[(status, b"stopped", 1, True)], timeout=5.0)
        assert not link.connected
        # Anything the broker did at the disconnect comes before this later marker from another client.
        mqtt_publish.single("dev/calm/marker", b"end", qos=1, hostname="127.0.0.1", port=broker.port)
        assert live.wait_for(lambda m: any(t == "dev/calm/marker" for t, _, _ in m), timeout=5)
        assert [p for t, p, _ in live.snapshot() if t == status] == [b"stopped"]
    with Collector(broker.port, status) as late:
        assert late.wait_for(lambda m: len(m) >= 1, timeout=5)
        assert late.messages[0] == (status, b"stopped", True)


# -- subscriptions ---------------------------------------------------------------------------------------------
def test_subscriptions_are_restored_after_a_broker_restart(tmp_path, broker, make_link):
    received: list[tuple[str, bytes]] = []
    link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 100))
    link.subscribe("cmd/+/run", 1, lambda topic, payload: received.append((topic, payload)))
    assert _until(lambda: link.connected, timeout=5)
    broker.restart()  # no persistence: the broker forgot every subscription
    assert _until(lambda: link.stats()["reconnects"] >= 1 and link.connected, timeout=10)

    def delivered() -> bool:
        mqtt_publish.single("cmd/a/run", b"go", qos=1, hostname="127.0.0.1", port=broker.port)
        return _until(lambda: bool(received), timeout=0.3)

    assert _until(delivered, timeout=5)
    assert received[0] == ("cmd/a/run", b"go")
    link.unsubscribe("cmd/+/run")


def test_a_failing_handler_does_not_stop_later_messages(tmp_path, broker, make_link):
    seen: list[bytes] = []
    also: list[bytes] = []

    def fragile(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"bad":
            raise RuntimeError("handler bug")

    link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 100))
    link.subscribe("in/#", 1, fragile)
    link.subscribe("in/x", 1, lambda topic, payload: also.append(payload))
    assert _until(lambda: link.connected, timeout=5)
    for payload in (b"bad", b"good", b"bad", b"last"):
        link.publish("in/x", payload)  # through the link itself: published in order, after the subscriptions
    assert _until(lambda: len(seen) == 4 and len(also) == 4, timeout=5)
    assert seen == [b"bad", b"good", b"bad", b"last"] == also
    assert link.connected


def test_publish_direct_needs_a_connection_and_flush_times_out_while_down(tmp_path, broker, make_link):
    broker.stop()
    link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 100))
    assert link.publish_direct("st/x", b"1") is False
    link.publish("st/x", b"2")
    assert link.flush(0.2) is False
    assert link.stats()["connected"] is False and link.stats()["last_error"]
    with pytest.raises(ValueError):
        link.publish("st/#", b"wildcards are for filters")


class _Recorder:
    """A handler that is a bound method, as a source's is: a new object at every attribute access."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def handle(self, topic: str, payload: bytes) -> None:
        self.payloads.append(payload)


def test_two_handlers_on_one_topic_both_get_every_message_and_leave_separately(tmp_path, broker, make_link):
    """Two models reading one IMU topic: each gets the whole stream; stopping one does not starve the other."""
    first, second, other = _Recorder(), _Recorder(), _Recorder()
    link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 100))
    link.subscribe("imu/pi", 0, first.handle)
    link.subscribe("imu/pi", 1, second.handle)
    link.subscribe("imu/other", 1, other.handle)
    assert _until(lambda: link.connected, timeout=5)
    for i in range(5):
        link.publish("imu/pi", str(i).encode())
    assert _until(lambda: len(first.payloads) == 5 and len(second.payloads) == 5, timeout=5)
    assert first.payloads == second.payloads == [str(i).encode() for i in range(5)]

    link.unsubscribe("imu/pi", first.handle)  # an equal bound method, not the same object
    for i in range(5, 10):
        link.publish("imu/pi", str(i).encode())
    link.publish("imu/other", b"marker")  # sent after them, on the same connection: once it is in, they are too
    assert _until(lambda: other.payloads == [b"marker"], timeout=5)
    assert _until(lambda: len(second.payloads) == 10, timeout=5)  # the broker subscription is still there
    assert second.payloads == [str(i).encode() for i in range(10)]
    assert len(first.payloads) == 5

    link.unsubscribe("imu/pi", second.handle)  # the last handler: now the broker is told
    assert "imu/pi" not in link._subscriptions
    link.unsubscribe("imu/pi", second.handle)  # unknown: ignored
    link.subscribe("imu/pi", 1, first.handle)
    link.subscribe("imu/pi", 1, second.handle)
    link.unsubscribe("imu/pi")  # None: every handler of the topic
    assert "imu/pi" not in link._subscriptions


@pytest.mark.broker
def test_retained_false_handlers_never_see_retained_messages_even_after_a_reconnect(tmp_path, make_link):
    """A retained cmd/reload must not run again at every reconnect, while a live one (even if retained) runs once."""
    with MosquittoBroker(persistence=True) as broker:  # keeps the retained message across the restart
        mqtt_publish.single("dev/cmd/reload", b"old", qos=1, retain=True, hostname="127.0.0.1", port=broker.port)
        with_retained, live_only = _Recorder(), _Recorder()
        link = make_link(broker.url, Spool(tmp_path / "spool.sqlite", 100))
        link.subscribe("dev/cmd/#", 1, with_retained.handle)
        link.subscribe("dev/cmd/#", 1, live_only.handle, retained=False)
        assert _until(lambda: with_retained.payloads == [b"old"], timeout=5)
        mqtt_publish.single("dev/cmd/reload", b"new", qos=1, retain=True, hostname="127.0.0.1", port=broker.port)
        mqtt_publish.single("dev/cmd/info", b"marker-1", qos=1, hostname="127.0.0.1", port=broker.port)
        assert _until(lambda: live_only.payloads[-1:] == [b"marker-1"], timeout=5)
        assert live_only.payloads == [b"new", b"marker-1"]

        broker.restart()  # the link reconnects and subscribes again: the broker re-sends the retained message
        assert _until(lambda: link.stats()["reconnects"] >= 1 and with_retained.payloads[-1:] == [b"new"], timeout=10)
        mqtt_publish.single("dev/cmd/info", b"marker-2", qos=1, hostname="127.0.0.1", port=broker.port)
        assert _until(lambda: live_only.payloads[-1:] == [b"marker-2"], timeout=5)
        assert live_only.payloads == [b"new", b"marker-1", b"marker-2"]
        assert with_retained.payloads == [b"old", b"new", b"marker-1", b"new", b"marker-2"]
