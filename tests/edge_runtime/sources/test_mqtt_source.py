"""The MQTT source with a fake subscriber: good and bad payloads, and a handler that never raises."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Callable

import numpy as np
import pytest

from edge_runtime.config import MqttSourceConfig
from edge_runtime.sources import SourceUnavailable
from edge_runtime.sources.mqtt import MqttSource
from edge_runtime.stream import ImageFrame

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


class FakeSubscriber:
    """Records subscriptions; `publish` calls the handler the way the MQTT network thread would."""

    def __init__(self) -> None:
        self.handlers: dict[str, tuple[int, Callable[[str, bytes], None]]] = {}
        self.unsubscribed: list[str] = []

    def subscribe(self, topic: str, qos: int, handler: Callable[[str, bytes], None]) -> None:
        self.handlers[topic] = (qos, handler)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)
        self.handlers.pop(topic, None)

    def publish(self, topic: str, payload: bytes) -> None:
        self.handlers[topic][1](topic, payload)


def mqtt(context, **options) -> MqttSource:
    return MqttSource(MqttSourceConfig(type="mqtt", topic="sensors/imu", **options), context)


@pytest.fixture
def subscriber() -> FakeSubscriber:
    return FakeSubscriber()


def test_json_messages_good_and_bad(sink, make_context, subscriber):
    source = mqtt(make_context(subscriber=subscriber), qos=1)
    source.start()
    assert subscriber.handlers["sensors/imu"][0] == 1
    subscriber.publish("sensors/imu", json.dumps({"ts": 5.0, "values": [1, 2, 3]}).encode())
    subscriber.publish("sensors/imu", json.dumps({"ts": 6.0, "samples": [[1, 2, 3], [4, 5, 6]]}).encode())
    for bad in (b"{", b"[]", b'{"values": [1, 2]}', b'{"values": [1, NaN, 3]}', b'{"samples": []}'):
        subscriber.publish("sensors/imu", bad)
    assert sink.samples() == 3
    np.testing.assert_allclose(sink.ts(), [5.0, 6.0, 6.01])
    assert sink.reasons == ["malformed_json", "bad_schema", "wrong_channel_count", "non_finite", "empty"]
    assert {where for _, where in sink.rejections} == {"mqtt:sensors/imu"}


def test_float32_messages(sink, make_context, subscriber):
    source = mqtt(make_context(subscriber=subscriber), format="float32")
    source.start()
    subscriber.publish("sensors/imu", np.arange(6, dtype="<f4").tobytes())
    subscriber.publish("sensors/imu", b"\0" * 7)
    np.testing.assert_array_equal(sink.values(), [[0, 1, 2], [3, 4, 5]])
    assert sink.reasons == ["bad_length"]


def test_payload_limit_is_the_smaller_of_source_and_daemon(sink, make_context, subscriber):
    source = mqtt(make_context(subscriber=subscriber, max_message_bytes=1000), max_payload_bytes=30)
    source.start()
    subscriber.publish("sensors/imu", json.dumps({"values": [1, 2, 3], "pad": "x" * 40}).encode())
    assert sink.reasons == ["oversized"]


def test_handler_never_raises(make_context, subscriber):
    class BrokenSink:
        def accept(self, item):
            raise RuntimeError("sink bug")

        def reject(self, rejected, source):
            raise RuntimeError("sink bug")

    source = mqtt(make_context(subscriber=subscriber, sink=BrokenSink()))
    source.start()
    subscriber.publish("sensors/imu", b'{"values": [1, 2, 3]}')
    subscriber.publish("sensors/imu", b"garbage")


def test_stop_unsubscribes_and_late_messages_are_ignored(sink, make_context, subscriber):
    source = mqtt(make_context(subscriber=subscriber))
    source.start()
    handler = subscriber.handlers["sensors/imu"][1]
    source.stop()
    assert subscriber.unsubscribed == ["sensors/imu"]
    handler("sensors/imu", b'{"values": [1, 2, 3]}')  # already in flight when stop() ran
    assert sink.items == [] and sink.rejections == []
    source.stop()
    assert subscriber.unsubscribed == ["sensors/imu"]


def test_start_needs_the_daemon_connection(make_context):
    with pytest.raises(RuntimeError, match="MQTT connection"):
        mqtt(make_context()).start()


def test_image_format_needs_an_image_model(make_context):
    with pytest.raises(ValueError, match="needs an image model"):
        mqtt(make_context(), format="image")


def test_sample_formats_need_a_sample_model(make_context, image_card):
    with pytest.raises(ValueError, match="takes images"):
        mqtt(make_context(image_card()), format="json")


def test_image_format_without_pillow_fails_at_construction(without_pillow, make_context, image_card):
    with pytest.raises(SourceUnavailable, match="pip install pillow"):
        mqtt(make_context(image_card()), format="image")


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_image_messages(sink, make_context, subscriber, image_card):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((10, 12, 3), 7, dtype=np.uint8)).save(buffer, format="PNG")
    source = mqtt(make_context(image_card(), subscriber=subscriber), format="image")
    source.start()
    subscriber.publish("sensors/imu", buffer.getvalue())
    subscriber.publish("sensors/imu", b"not an image")
    (frame,) = sink.items
    assert isinstance(frame, ImageFrame) and frame.pixels.shape == (10, 12, 3)
    assert sink.reasons == ["bad_image"]
