"""The sentinel the absence checks rely on (tests/support/broker.py): it comes after what the broker had for the
collector, it is not recorded, and a sentinel that cannot arrive is reported, not waited for forever."""

from __future__ import annotations

import paho.mqtt.publish as mqtt_publish

from tests.support.broker import Collector, MosquittoBroker, send_sentinels


def test_sync_comes_after_the_retained_messages_and_is_not_recorded(broker):
    mqtt_publish.single("edge/pi-01/deploy/request", b"old", qos=1, retain=True, hostname="127.0.0.1",
                        port=broker.port)
    with Collector(broker.port, "edge/+/deploy/request") as retained:
        assert retained.sync()
        assert retained.snapshot() == [("edge/pi-01/deploy/request", b"old", True)]
        for index in range(100):  # acknowledged before the next sync: each one is there when it returns
            mqtt_publish.single("edge/pi-02/deploy/request", str(index).encode(), qos=1, hostname="127.0.0.1",
                                port=broker.port)
        assert retained.sync()  # again: a new sentinel each time
        assert retained.payloads() == [b"old", *(str(index).encode() for index in range(100))]


def test_a_sentinel_that_cannot_arrive_is_reported(broker):
    with MosquittoBroker() as unbridged, Collector(broker.port, "edge/#") as collector:
        assert not collector.sync(timeout=0.5, via_port=unbridged.port)
    sent: list[int] = []
    assert not send_sentinels(lambda: sent.append(1), lambda: False, timeout=0.5)
    assert len(sent) >= 2  # sent again while nothing arrived
