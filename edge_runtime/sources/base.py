"""What every sensor source offers the daemon.

A source plugin is one module in this package with a `Source` subclass whose `type` matches its config's
`type`. A source owns its thread (or its MQTT subscription) and hands `SampleBlock`s or `ImageFrame`s to the
model's sink; bad input goes to `sink.reject`, never into an exception that would stop the stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_runtime.card import ModelCard
from edge_runtime.stream import SampleSink


class Subscriber(Protocol):
    """The daemon's MQTT connection as a source sees it; subscriptions survive reconnects."""

    def subscribe(self, topic: str, qos: int, handler: Callable[[str, bytes], None]) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...


@dataclass
class SourceContext:
    card: ModelCard
    sink: SampleSink
    subscriber: Subscriber | None = None
    max_message_bytes: int = 1_048_576


class Source(ABC):
    type: ClassVar[str]

    def __init__(self, config: Any, context: SourceContext):
        self.config = config
        self.context = context

    @abstractmethod
    def start(self) -> None:
        """Begin delivering to the sink; returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering; returns when the source's thread has ended."""

    @property
    def finished(self) -> bool:
        """True when a finite source (a replay without loop) has delivered everything."""
        return False

    def describe(self) -> str:
        return self.type
