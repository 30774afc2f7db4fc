"""CommandHandler in-process with its narrow seams (the real RunningModels with a fake bundle loader, a list-backed
publish function, the contract's topics, a stats provider): one command thread behind a bounded queue, `info` that
does not reset the periodic stats, `reload` refusing a bundle whose input has another shape."""

from __future__ import annotations

import json
import threading

import pytest

from edge_runtime.contract import DeviceTopics
from edge_runtime.control.commands import QUEUE_SIZE, CommandHandler
from edge_runtime.control.models import RunningModels
from tests.edge_runtime.test_model_worker import FEATURES, TIME_SERIES, FakeModel, card, make_worker
from tests.support.control import ControlKey
from tests.support.daemon import wait_until

TIMEOUT = 10.0


class FakeLink:
    def __init__(self):
        self.published: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        with self.lock:
            self.published.append((topic, json.loads(payload)))
            return len(self.published)

    def publish_direct(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        return True

    def results(self, name: str) -> list[dict]:
        with self.lock:
            return [body for topic, body in self.published if topic == f"edge/dev-1/cmd/{name}/result"]


class Device:
    """What a CommandHandler is given: the model owner (loading `models` in turn), a publish function, the
    topics, and a stats provider that records how it was called."""

    def __init__(self, key: ControlKey, workers: dict | None = None, models: list | None = None):
        self.key = key
        self.link = FakeLink()
        self.loaded = list(models or [])
        self.statuses = 0
        self.models = RunningModels(lambda config, bundle, require_signature: self.loaded.pop(0),
                                    on_change=self.status_changed)
        for worker in (workers or {}).values():
            self.models.add(worker)
        self.stats_calls: list[dict] = []

    def stats(self, **kwargs) -> dict:
        self.stats_calls.append(kwargs)
        return {"models": {}}

    def status_changed(self) -> None:
        self.statuses += 1

    def handler(self) -> CommandHandler:
        return CommandHandler(self.models, self.link.publish, DeviceTopics("edge", "dev-1"), board="x86_64",
                              stats=self.stats, authority=self.key.authority())


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> ControlKey:
    return ControlKey(tmp_path_factory.mktemp("control"))


@pytest.fixture
def handlers():
    made: list[CommandHandler] = []
    yield made
    for handler in made:
        handler.stop(timeout=5)


def test_commands_run_on_one_thread_and_a_full_queue_answers_busy(handlers, key):
    daemon = Device(key)
    handler = daemon.handler()
    handlers.append(handler)
    running, release = threading.Event(), threading.Event()
    threads: set[str] = set()

    def slow_info(request: dict) -> dict:
        threads.add(threading.current_thread().name)
        running.set()
        assert release.wait(TIMEOUT), "the test never released the command"
        return {"ok": True}

    handler.cmd_info = slow_info
    before = threading.active_count()
    handler.handle("edge/dev-1/cmd/info", key.command("info", {"request_id": 0}))
    assert running.wait(TIMEOUT)
    for index in range(1, QUEUE_SIZE + 1):  # these wait in the queue
        handler.handle("edge/dev-1/cmd/info", key.command("info", {"request_id": index}))
    handler.handle("edge/dev-1/cmd/info", key.command("info", {"request_id": "late"}))
    busy = daemon.link.results("info")
    assert len(busy) == 1 and busy[0]["ok"] is False and "busy" in busy[0]["error"], busy
    assert threading.active_count() == before, "a thread per command"
    release.set()
    assert wait_until(lambda: len(daemon.link.results("info")) == QUEUE_SIZE + 2, TIMEOUT)
    answered = [body["request_id"] for body in daemon.link.results("info")[1:]]
    assert answered == list(range(QUEUE_SIZE + 1)), "commands ran out of order"
    assert len(threads) == 1


def test_a_failing_command_does_not_end_the_command_thread(handlers, key):
    daemon = Device(key)
    handler = daemon.handler()
    handlers.append(handler)
    handler.handle("edge/dev-1/cmd/nope", key.command("nope"))
    handler.handle("edge/dev-1/cmd/info", b"[1, 2]")
    handler.handle("edge/dev-1/cmd/info", key.command("info", {"request_id": 7}))
    assert wait_until(lambda: len(daemon.link.results("info")) == 2, TIMEOUT)
    assert daemon.link.results("nope")[0]["ok"] is False
    assert daemon.link.results("info")[0]["refused"] == "malformed"
    assert daemon.link.results("info")[-1]["ok"] is True and daemon.link.results("info")[-1]["request_id"] == 7


def test_info_does_not_advance_the_periodic_stats(handlers, key):
    daemon = Device(key)
    handler = daemon.handler()
    handlers.append(handler)
    handler.handle("edge/dev-1/cmd/info", key.command("info"))
    assert wait_until(lambda: daemon.link.results("info"), TIMEOUT)
    assert daemon.stats_calls == [{"advance": False}]


def test_reload_refuses_an_input_of_another_shape_and_keeps_the_running_model(handlers, key):
    old = FakeModel(card(TIME_SERIES))
    worker = make_worker(old)
    wider = FakeModel(card(TIME_SERIES, window=20), version="2")
    daemon = Device(key, workers={"fake": worker}, models=[wider])
    handler = daemon.handler()
    handlers.append(handler)
    handler.handle("edge/dev-1/cmd/reload", key.command("reload"))
    assert wait_until(lambda: daemon.link.results("reload"), TIMEOUT)
    result = daemon.link.results("reload")[0]
    assert result["ok"] is False and "window 20" in result["error"] and "10" in result["error"], result
    assert worker.model is old and not old.closed.is_set()
    assert wider.closed.is_set(), "the refused model was left open"
    assert daemon.statuses == 0, "the status was republished for a refused reload"


def test_reload_with_the_same_input_swaps(handlers, key):
    old = FakeModel(card(FEATURES))
    worker = make_worker(old)
    new = FakeModel(card(FEATURES, normalize={"mean": [0, 0, 0], "std": [1, 1, 1]}), version="2")
    daemon = Device(key, workers={"fake": worker}, models=[new])
    handler = daemon.handler()
    handlers.append(handler)
    handler.handle("edge/dev-1/cmd/reload", key.command("reload"))
    assert wait_until(lambda: daemon.link.results("reload"), TIMEOUT)
    assert daemon.link.results("reload")[0]["ok"] is True
    assert worker.model is new and old.closed.is_set()  # the worker never started: closed at once
    assert daemon.statuses == 1, "the status was not republished after the swap"
