"""What every sensor source offers the daemon, and the one module a source plugin imports from this package.

A source plugin is one module in this package defining a `BaseSourceConfig` subclass with `type: Literal[KEY]`
and a `Source` subclass whose `type` is the same KEY; the registry (`edge_runtime.sources`) discovers both. A
source owns its thread (or its MQTT subscription) and hands `SampleBlock`s or `ImageFrame`s to the model's sink;
bad input goes to `sink.reject`, never into an exception that would stop the stream.

Optional libraries are imported when the source is made, not when its module is: the serial source lists
pyserial in `Source.requires`, image sources call `require_pillow_for`. A board that uses neither never imports
them, and a missing one is a `SourceUnavailable` naming the pip command.
"""

from __future__ import annotations

import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_runtime.card import AudioInput, FeatureInput, ModelCard, TimeSeriesInput
from edge_runtime.plugin import PluginConfig
from edge_runtime.stream import SampleSink

log = logging.getLogger("edge_runtime.sources")

#: a feature vector has no sensor rate; sources that need one use this unless their config sets rate_hz
FEATURE_RATE_HZ = 1.0


class BaseSourceConfig(PluginConfig):
    """Base of every source's config: a subclass with `type: Literal[KEY]` makes KEY a valid `source:` type."""


class SourceUnavailable(RuntimeError):
    """This source cannot run here (a missing optional library); the message says what to install."""


def require_pillow_for(type_name: str) -> None:
    """Fail at construction, not on every frame, when an image source has no Pillow to decode with."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        message = f"the {type_name} source decodes JPEG/PNG and needs Pillow: pip install pillow"
        raise SourceUnavailable(message) from None


def stream_shape(card: ModelCard, rate_hz: float | None = None) -> tuple[int, float]:
    """Channels and sample rate a sample source produces for this card (`rate_hz` from the config wins)."""
    spec = card.input
    if isinstance(spec, TimeSeriesInput):
        return spec.channels, rate_hz or spec.rate_hz
    if isinstance(spec, AudioInput):  # mono samples; the rate is the card's (no resampling)
        return 1, float(spec.rate_hz)
    if isinstance(spec, FeatureInput):
        return spec.features, rate_hz or FEATURE_RATE_HZ
    raise ValueError(f"model {card.name} takes images; use an image source (folder, or mqtt with format: image)")


class Subscriber(Protocol):
    """The daemon's MQTT connection as a source sees it; subscriptions survive reconnects."""

    def subscribe(self, topic: str, qos: int, handler: Callable[[str, bytes], None], retained: bool = True) -> None:
        ...

    def unsubscribe(self, topic: str, handler: Callable[[str, bytes], None] | None = None) -> None:
        """Remove `handler` (None: every handler of `topic`); other handlers of the same topic keep theirs."""
        ...


@dataclass
class SourceContext:
    card: ModelCard
    sink: SampleSink
    subscriber: Subscriber | None = None
    max_message_bytes: int = 1_048_576


#: how long `stop()` waits for a source's thread, which may be blocked in `sink.accept` (backpressure)
STOP_TIMEOUT_S = 5.0


def join_source_thread(thread: threading.Thread | None, source: str, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Wait (at most `timeout` s) for a source's thread to end after its stop flag was set; False, logged, if it
    is still running (a daemon thread: it ends at the next stop-flag check, or with the process)."""
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout)
    if thread.is_alive():
        log.warning("source %s: its thread is still running %.1f s after stop (blocked in the model's input "
                    "queue or a read?); it ends at its next stop check", source, timeout)
        return False
    return True


class Source(ABC):
    #: the KEY of the plugin's config (`type: Literal[KEY]`)
    type: ClassVar[str]
    #: optional libraries the source imports when it runs: import name -> pip package that provides it
    requires: ClassVar[dict[str, str]] = {}
    #: the longest `stop()` waits for the source's thread (see join_source_thread)
    stop_timeout_s: float = STOP_TIMEOUT_S

    def __init__(self, config: Any, context: SourceContext):
        self.check_requirements()
        self.config = config
        self.context = context

    @abstractmethod
    def start(self) -> None:
        """Begin delivering to the sink; returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering; returns when the source's thread has ended, or after `stop_timeout_s` (logged)."""

    @property
    def finished(self) -> bool:
        """True when a finite source (a replay without loop) has delivered everything."""
        return False

    def describe(self) -> str:
        return self.type

    @classmethod
    def check_requirements(cls) -> None:
        """Import every library in `requires`; SourceUnavailable with the pip command for the first missing one."""
        for module, package in cls.requires.items():
            try:
                importlib.import_module(module)
            except ImportError:
                raise SourceUnavailable(f"the {cls.type} source needs {package}: pip install {package}") from None


class ThreadedSource(Source):
    """A source that reads in a thread of its own (replay, synthetic, folder, IIO, serial): start, stop and the
    finished flag in one place. Subclasses implement `_run`, which returns when `self._stop` is set."""

    def __init__(self, config: Any, context: SourceContext):
        super().__init__(config, context)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"source-{self.describe()}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        join_source_thread(self._thread, self.describe(), self.stop_timeout_s)

    @abstractmethod
    def _run(self) -> None:
        """Deliver until finished or stopped."""
