"""The deploy receiver in-process with its narrow seams only (a model service, a publish function, a subscriber,
the contract's topics): a transfer fetched chunk by chunk within the window, installed over the configured bundle,
and a broken request answered `failed` without a transfer."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_runtime.config import DeployConfig
from edge_runtime.contract import DeviceTopics, FleetTopics, deploy_status
from edge_runtime.control.deploy import WINDOW, DeployReceiver
from tests.support.control import ControlKey
from tests.support.daemon import wait_until

TOPICS = DeviceTopics("edge", "dev-1")
CHUNK = 512


class Models:
    """The model service: one model, `m`; `install` keeps what it was given."""

    def __init__(self):
        self.installed: list[tuple[str, bytes, bool, bool | None]] = []
        self.checked: list[tuple] = []

    def resolve(self, name: str | None) -> str:
        if name not in (None, "m"):
            raise ValueError(f"no model '{name}' (models: m)")
        return "m"

    def configured_bundle(self, name: str) -> Path:
        return Path("/nowhere/m.bundle")

    def check_version(self, name, version, created, allow_downgrade) -> None:
        self.checked.append((name, version, created, allow_downgrade))

    def install(self, name: str, bundle: Path, *, write_over_configured: bool = False,
                require_signature: bool | None = None, allow_downgrade: bool = False):
        self.installed.append((name, Path(bundle).read_bytes(), write_over_configured, require_signature))
        return SimpleNamespace(describe=lambda: {"version": "2", "model_sha256": "ab", "precision": "int8",
                                                 "signature": "unsigned"})

    def describe(self) -> list[dict]:
        return []


class Subscriber:
    def __init__(self):
        self.lock = threading.Lock()
        self.handlers: dict[str, object] = {}
        self.most = 0

    def subscribe(self, topic, qos, handler, retained=True) -> None:
        with self.lock:
            self.handlers[topic] = handler
            self.most = max(self.most, sum(1 for t in self.handlers if "/chunk/" in t))

    def unsubscribe(self, topic, handler=None) -> None:
        with self.lock:
            self.handlers.pop(topic, None)

    def chunk_topics(self) -> list[str]:
        with self.lock:
            return [topic for topic in self.handlers if "/chunk/" in topic]

    def deliver(self, topic: str, payload: bytes) -> None:
        with self.lock:
            handler = self.handlers[topic]
        handler(topic, payload)


@pytest.fixture
def device(tmp_path):
    published: list[tuple[str, dict]] = []
    models, subscriber = Models(), Subscriber()
    key = ControlKey(tmp_path / "keys")
    receiver = DeployReceiver(models, lambda topic, payload, qos=1, retain=False: published.append(
        (topic, json.loads(payload))), subscriber, TOPICS, DeployConfig(require_signature=False),
        folder=tmp_path / "deploy", can_verify=False, authority=key.authority(nonces=tmp_path / "nonces.json"))
    receiver.start()
    yield SimpleNamespace(published=published, models=models, subscriber=subscriber, key=key, receiver=receiver)
    receiver.stop(timeout=5)


def states(published: list[tuple[str, dict]]) -> list[str]:
    return [document["state"] for topic, document in list(published) if topic == TOPICS.deploy_status]


def test_a_transfer_through_the_seams_is_installed_over_the_configured_bundle(device):
    data = os.urandom(CHUNK * 40 + 7)
    chunks = [data[start:start + CHUNK] for start in range(0, len(data), CHUNK)]
    sha = hashlib.sha256(data).hexdigest()
    request = {"deployment_id": "d-1", "bundle_sha256": sha, "size": len(data), "chunk_size": CHUNK,
               "chunks": len(chunks), "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks],
               "chunk_topic": FleetTopics("edge").bundle_chunks(sha)}
    device.subscriber.deliver(TOPICS.deploy_request, device.key.deploy(request))
    while not any(state in ("installed", "failed") for state in states(device.published)):
        assert wait_until(lambda: device.subscriber.chunk_topics() or "installed" in states(device.published), 10)
        delivered = device.subscriber.chunk_topics()
        for topic in delivered:
            device.subscriber.deliver(topic, chunks[int(topic.rsplit("/", 1)[1])])
        # each stored chunk's topic is unsubscribed: wait for that before looking at the window again
        assert wait_until(lambda d=set(delivered): not d & set(device.subscriber.chunk_topics()), 10)
    final = [document for topic, document in device.published if topic == TOPICS.deploy_status][-1]
    assert final["state"] == "installed" and final["received"] == len(chunks) and final["version"] == "2", final
    assert device.models.installed == [("m", data, True, None)]
    assert device.subscriber.most <= WINDOW, "more chunk topics subscribed at once than the window"
    assert final["duplicates"] == 0 and final["downloaded"] == len(chunks), final
    assert set(deploy_status("x", "y", "installed")) <= set(final)  # the contract's keys, in the status sent


def test_a_broken_request_is_answered_failed_without_a_transfer(device):
    device.subscriber.deliver(TOPICS.deploy_request, b"{not json")
    device.subscriber.deliver(TOPICS.deploy_request, device.key.deploy({"deployment_id": "d-2", "model": "x"}))
    assert wait_until(lambda: len(states(device.published)) == 2, 10)
    first, second = (document for _, document in device.published)
    assert first["deployment_id"] is None and "not JSON" in first["error"] and first["device_id"] == "dev-1"
    assert second["deployment_id"] == "d-2" and second["error"].startswith("bad request: ")
    assert not device.subscriber.chunk_topics() and not device.models.installed


def request_for_data(data: bytes, deployment_id: str, chunk: int = CHUNK) -> dict:
    chunks = [data[start:start + chunk] for start in range(0, len(data), chunk)]
    sha = hashlib.sha256(data).hexdigest()
    return {"deployment_id": deployment_id, "bundle_sha256": sha, "size": len(data), "chunk_size": chunk,
            "chunks": len(chunks), "chunk_sha256": [hashlib.sha256(c).hexdigest() for c in chunks],
            "chunk_topic": FleetTopics("edge").bundle_chunks(sha)}


def test_limits_and_the_signature_policy_are_checked_before_a_chunk_is_fetched(tmp_path):
    published: list[tuple[str, dict]] = []
    models, subscriber = Models(), Subscriber()
    key = ControlKey(tmp_path / "keys")
    receiver = DeployReceiver(models, lambda topic, payload, qos=1, retain=False: published.append(
        (topic, json.loads(payload))), subscriber, TOPICS, DeployConfig(max_chunk_bytes=1024),
        folder=tmp_path / "deploy", can_verify=False, authority=key.authority())
    receiver.start()
    try:
        subscriber.deliver(TOPICS.deploy_request, key.deploy(request_for_data(os.urandom(5000), "big-chunks", 4096)))
        subscriber.deliver(TOPICS.deploy_request, key.deploy(request_for_data(os.urandom(5000), "no-keys", 512)))
        assert wait_until(lambda: len(states(published)) == 2, 10)
        errors = [document["error"] for _, document in published]
        assert "max_chunk_bytes" in errors[0] and "no security.trusted_keys" in errors[1], errors
        assert subscriber.most == 0, "a chunk was subscribed before the request was refused"
    finally:
        receiver.stop(timeout=5)


def test_a_flood_on_the_deploy_topics_is_bounded_and_counted(tmp_path):
    from edge_runtime.control.deploy import QUEUE_SIZE

    models, subscriber = Models(), Subscriber()
    key = ControlKey(tmp_path / "keys")
    gate = threading.Event()
    receiver = DeployReceiver(models, lambda topic, payload, qos=1, retain=False: gate.wait(10), subscriber, TOPICS,
                              DeployConfig(require_signature=False), folder=tmp_path / "deploy", can_verify=False,
                              authority=key.authority())
    receiver.start()
    try:
        for _ in range(QUEUE_SIZE * 3):  # the deploy thread is held by the first answer: the queue fills
            receiver._on_request(TOPICS.deploy_request, b'{"not": "signed"}')
        receiver._on_chunk("edge/bundles/x/chunk/0", b"x")
        stats = receiver.stats()
        assert stats["dropped_requests"] >= QUEUE_SIZE and stats["dropped_chunks"] == 1, stats
        assert receiver._queue.qsize() <= QUEUE_SIZE
    finally:
        gate.set()
        receiver.stop(timeout=5)
