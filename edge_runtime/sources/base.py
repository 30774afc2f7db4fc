"""What every sensor source offers the daemon.

A source plugin is one module in this package with a `Source` subclass whose `type` matches its config's
`type`. A source owns its thread (or its MQTT subscription) and hands `SampleBlock`s or `ImageFrame`s to the
model's sink; bad input goes to `sink.reject`, never into an exception that would stop the stream.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edge_runtime.card import ModelCard
from edge_runtime.stream import SampleSink

log = logging.getLogger("edge_runtime.sources")


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
    type: ClassVar[str]
    #: the longest `stop()` waits for the source's thread (see join_source_thread)
    stop_timeout_s: float = STOP_TIMEOUT_S

    def __init__(self, config: Any, context: SourceContext):
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
