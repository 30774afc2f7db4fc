"""The MQTT source with a fake subscriber: good and bad payloads, and a handler that never raises."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Callable

import numpy as np
import pytest

from edge_runtime.sources import SourceUnavailable
from edge_runtime.sources.mqtt import MqttSource, MqttSourceConfig
from edge_runtime.stream import ImageFrame
from edge_runtime.window import SlidingWindow

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


class FakeSubscriber:
    """Records subscriptions; `publish` calls the handler the way the MQTT network thread would."""

    def __init__(self) -> None:
        self.handlers: dict[str, tuple[int, Callable[[str, bytes], None]]] = {}
        self.unsubscribed: list[str] = []
        self.unsubscribed_handlers: list[Callable[[str, bytes], None] | None] = []

    def subscribe(self, topic: str, qos: int, handler: Callable[[str, bytes], None], retained: bool = True) -> None:
        self.handlers[topic] = (qos, handler)

    def unsubscribe(self, topic: str, handler: Callable[[str, bytes], None] | None = None) -> None:
        self.unsubscribed.append(topic)
        self.unsubscribed_handlers.append(handler)
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


def test_handler_never_raises(sink, make_context, subscriber):
    class BrokenSink:
        """Raises on every call while `broken` (and records the call), then hands on to the recording sink."""

        def __init__(self) -> None:
            self.broken = True
            self.calls: list[str] = []

        def accept(self, item):
            self.calls.append("accept")
            if self.broken:
                raise RuntimeError("sink bug")
            sink.accept(item)

        def reject(self, rejected, source):
            self.calls.append(rejected.reason)
            if self.broken:
                raise RuntimeError("sink bug")
            sink.reject(rejected, source)

    broken = BrokenSink()
    source = mqtt(make_context(subscriber=subscriber, sink=broken))
    source.start()
    subscriber.publish("sensors/imu", b'{"values": [1, 2, 3]}')
    subscriber.publish("sensors/imu", b"garbage")
    # both reached the sink, which raised each time; the failed accept was reported as an internal error
    assert broken.calls == ["accept", "internal_error", "malformed_json"]
    broken.broken = False
    # the handler is still subscribed and works: a bad message is rejected, a good one after it delivered
    subscriber.publish("sensors/imu", b"garbage")
    subscriber.publish("sensors/imu", b'{"values": [4, 5, 6]}')
    np.testing.assert_array_equal(sink.values(), [[4, 5, 6]])
    assert sink.reasons == ["malformed_json"]
    assert {where for _, where in sink.rejections} == {"mqtt:sensors/imu"}


def test_stop_unsubscribes_and_late_messages_are_ignored(sink, make_context, subscriber):
    source = mqtt(make_context(subscriber=subscriber))
    source.start()
    handler = subscriber.handlers["sensors/imu"][1]
    source.stop()
    assert subscriber.unsubscribed == ["sensors/imu"]
    assert subscriber.unsubscribed_handlers == [handler]  # only its own handler: another model may share the topic
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


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(count: int, start: int = 0) -> bytes:
    return np.arange(start * 3, (start + count) * 3, dtype="<f4").tobytes()


def test_arrival_jitter_does_not_make_time_go_backwards(sink, make_context, subscriber):
    """float32 rows are stamped on arrival (the newest row at now()); at 100 Hz, messages of 4 rows are due every
    40 ms. One that arrives 30 ms early would overlap the previous one: it is moved to follow it instead."""
    clock = FakeClock(1000.0)
    source = MqttSource(MqttSourceConfig(type="mqtt", topic="sensors/imu", format="float32"),
                        make_context(subscriber=subscriber), clock=clock)
    source.start()
    window = SlidingWindow(window=8, hop=4, channels=3)
    windows = []
    for index, arrival in enumerate([1000.0, 1000.04, 1000.05, 1000.12]):  # the third is 30 ms early
        clock.now = arrival
        subscriber.publish("sensors/imu", rows(4, start=4 * index))
        windows += window.push(sink.blocks[-1])  # raised out_of_order before the cursor
    ts = sink.ts()
    assert (np.diff(ts) > 0).all()
    np.testing.assert_allclose(ts[8:12], 1000.04 + 0.01 * np.arange(1, 5))  # right after the previous block
    np.testing.assert_allclose(ts[12:], 1000.12 - 0.01 * np.arange(3, -1, -1))  # on time again: not moved
    assert len(windows) == 3 and source.cursor.shifted == 1 and sink.reasons == []


def test_json_without_ts_is_shifted_and_an_explicit_ts_never_is(sink, make_context, subscriber):
    clock = FakeClock(50.0)
    source = MqttSource(MqttSourceConfig(type="mqtt", topic="sensors/imu"), make_context(subscriber=subscriber),
                        clock=clock)
    source.start()
    subscriber.publish("sensors/imu", json.dumps({"samples": [[1, 2, 3], [4, 5, 6]]}).encode())  # 50.0, 50.01
    clock.now = 49.99  # arrives before the previous message ended
    subscriber.publish("sensors/imu", json.dumps({"values": [1, 2, 3]}).encode())
    np.testing.assert_allclose(sink.ts(), [50.0, 50.01, 50.02])
    subscriber.publish("sensors/imu", json.dumps({"ts": 49.0, "values": [1, 2, 3]}).encode())  # the sensor's own
    assert sink.blocks[-1].ts.tolist() == [49.0]


def test_a_large_step_back_is_reanchored_to_the_clock_not_shifted(sink, make_context, subscriber):
    clock = FakeClock(1000.0)
    source = MqttSource(MqttSourceConfig(type="mqtt", topic="sensors/imu", format="float32"),
                        make_context(subscriber=subscriber), clock=clock)
    source.start()
    subscriber.publish("sensors/imu", rows(2))
    clock.now = 990.0  # the wall clock stepped back 10 s (NTP): far more than jitter
    subscriber.publish("sensors/imu", rows(2))
    np.testing.assert_allclose(sink.blocks[-1].ts, [989.99, 990.0])
    clock.now = 990.02
    subscriber.publish("sensors/imu", rows(2))  # the cursor follows the new timeline
    np.testing.assert_allclose(sink.blocks[-1].ts, [990.01, 990.02])
    assert source.cursor.shifted == 0 and source.cursor.reanchored == 1
