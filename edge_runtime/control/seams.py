"""The narrow seams between the control plane and the rest of the daemon, as protocols.

Why protocols: the command handler and the deploy receiver used to take the whole `Daemon` and reach into its
link, topics, workers and config. They now name exactly what they use; the daemon passes its MQTT link's bound
methods and its `RunningModels`, a unit test passes a list-backed publish function and a fake loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_runtime.config import ModelConfig
from edge_runtime.model_loader import LoadedModel

Handler = Callable[[str, bytes], None]


class Publish(Protocol):
    """Durable publishing (the daemon: `MqttLink.publish`, spooled until the broker has it)."""

    def __call__(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...


class Subscriber(Protocol):
    """Subscriptions that survive reconnects (the daemon: `MqttLink`)."""

    def subscribe(self, topic: str, qos: int, handler: Handler, retained: bool = True) -> None: ...

    def unsubscribe(self, topic: str, handler: Handler | None = None) -> None: ...


class StatsProvider(Protocol):
    """The daemon's health numbers; `advance=False` leaves the periodic intervals alone."""

    def __call__(self, advance: bool = True) -> dict: ...


class BundleLoader(Protocol):
    """Load, verify (checksums, signature, golden output) and warm up one bundle for a configured model."""

    def __call__(self, config: ModelConfig, bundle: Path, require_signature: bool) -> LoadedModel: ...


class ModelService(Protocol):
    """What commands and deployments may do with the running models (implemented by `RunningModels`)."""

    def resolve(self, name: str | None) -> str: ...

    def configured_bundle(self, name: str) -> Path: ...

    def install(self, name: str, bundle: Path, *, write_over_configured: bool = False,
                require_signature: bool | None = None, allow_downgrade: bool = False) -> LoadedModel: ...

    def check_version(self, name: str, version: str | None, created: str | None, allow_downgrade: bool) -> None: ...

    def describe(self) -> list[dict]: ...
