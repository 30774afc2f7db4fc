"""Sensor messages on an MQTT topic, through the daemon's own connection (subscriptions survive reconnects).

The handler runs on the MQTT client's network thread: it decodes, hands the result to the sink and returns.
It never raises, because an exception there would take the whole connection (every model's input) down.

Messages without a ts of their own (JSON without "ts", raw float32) are stamped on arrival, so network jitter
would become time going backwards: a message that arrives 40 ms early overlaps the one before and the window
would reject it as out_of_order. The source keeps an `ArrivalCursor` (see decode.py) that moves such a block
just after the previous one when the overlap is small; a ts sent by the sensor is never shifted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from edge_runtime.card import ImageInput
from edge_runtime.decode import ArrivalClock, ArrivalCursor, decode_float32, decode_image, decode_json
from edge_runtime.sources.base import BaseSourceConfig, Source, SourceContext, require_pillow_for, stream_shape
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock

log = logging.getLogger(__name__)

SOURCE_KEY = "mqtt"


class MqttSourceConfig(BaseSourceConfig):
    """Sensor messages on an MQTT topic: JSON `{"ts", "values"}` or `{"ts", "samples"}`, raw float32, or images."""

    order = 10
    type: Literal[SOURCE_KEY]
    topic: str
    qos: Literal[0, 1, 2] = 0
    format: Literal["json", "float32", "image"] = "json"
    max_payload_bytes: int = Field(1_048_576, gt=0)


class MqttSource(Source):
    type = SOURCE_KEY
    config: MqttSourceConfig

    def __init__(self, config: MqttSourceConfig, context: SourceContext, clock: Callable[[], float] = time.time):
        super().__init__(config, context)
        self.max_bytes = min(config.max_payload_bytes, context.max_message_bytes)
        self.clock = clock
        self._subscribed = False
        self._internal_logged = False
        self.cursor: ArrivalCursor | None = None  # sample formats only
        self._decode = self._decoder()

    def _decoder(self) -> Callable[[bytes, Callable[[], float]], SampleBlock | ImageFrame]:
        card = self.context.card
        if self.config.format == "image":
            if not isinstance(card.input, ImageInput):
                raise ValueError(f"mqtt format 'image' needs an image model; {card.name} takes {card.input.kind}")
            require_pillow_for("mqtt image")
            spec = card.input
            return lambda payload, now: decode_image(payload, spec, self.max_bytes, now)
        channels, rate_hz = stream_shape(card)
        self.cursor = ArrivalCursor(rate_hz, name=f"mqtt source {self.config.topic}")
        decode = decode_json if self.config.format == "json" else decode_float32
        return lambda payload, now: decode(payload, channels, rate_hz, self.max_bytes, now)

    def start(self) -> None:
        if self.context.subscriber is None:
            raise RuntimeError("the mqtt source needs the daemon's MQTT connection (SourceContext.subscriber)")
        self._subscribed = True
        self.context.subscriber.subscribe(self.config.topic, self.config.qos, self._handle)

    def stop(self) -> None:
        if self._subscribed and self.context.subscriber is not None:
            self._subscribed = False
            # only this source's handler: another model may read the same topic
            self.context.subscriber.unsubscribe(self.config.topic, self._handle)

    def describe(self) -> str:
        return f"mqtt:{self.config.topic}"

    def _handle(self, topic: str, payload: bytes) -> None:
        if not self._subscribed:  # a message already in flight when stop() ran
            return
        try:
            arrival = ArrivalClock(self.clock)
            item = self._decode(payload, arrival)
            if isinstance(item, SampleBlock) and self.cursor is not None:
                item = self.cursor.place(item, stamped_on_arrival=arrival.used)
            self.context.sink.accept(item)
        except InputRejected as rejected:
            self._reject(rejected)
        except Exception as error:  # a decoder bug must not kill the MQTT network thread
            if not self._internal_logged:  # one traceback, not one per message of a flood
                self._internal_logged = True
                log.exception("mqtt source %s: unexpected error decoding a message on %s (logged once)",
                              self.config.topic, topic)
            self._reject(InputRejected("internal_error", f"{type(error).__name__}: {str(error)[:120]}"))

    def _reject(self, rejected: InputRejected) -> None:
        try:
            self.context.sink.reject(rejected, source=self.describe())
        except Exception:
            log.exception("mqtt source %s: the sink failed to take a rejection", self.config.topic)
