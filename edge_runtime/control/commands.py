"""Commands over MQTT: `edge/<device>/cmd/<name>` -> `edge/<device>/cmd/<name>/result`.

    info                              the device, its models and their backends
    reload {"model", "allow_downgrade"} load the *configured* bundle path again, verify its signature against
                              the trusted keys, refuse it if it is older than what the slot ran (unless
                              `allow_downgrade`), reproduce its golden output, then swap it in between two
                              batches. Any failure keeps the running model and says why. No other path: a file
                              an attacker managed to leave on the device is never loaded by name.

Every command is a signed envelope (`edge_runtime.contract.control`, made by `edge-fleet command`), checked by the
`ControlAuthority` before anything else: signed by a control key, for this device or its group, not expired, not a
replay. A refused command is counted (stats `control.refused`), and answered `{"ok": false, "refused": reason}`
at a bounded rate (`TokenBucket`): an unauthenticated sender must not be able to fill the spool with answers.
`security.unsigned_info: true` lets an unsigned `info` through: it answers with what the device already
publishes to every subscriber of its status and stats topics, so it reveals nothing new, but it does make the
device publish, hence off by default.

Commands run one at a time on one command thread, fed by a bounded queue: a reload that takes seconds must not
stall the MQTT network loop, and a flood of commands must not make a thread each. When `QUEUE_SIZE` commands are
already waiting, a new one is answered `{"ok": false, "error": "busy ..."}` at once. Retained command messages
are not delivered to the handler (the daemon subscribes with `retained=False`): a retained `reload` would run
again after every reconnect.

The handler gets the model owner, a publish function, the device's topics, the board's name and a stats provider
(the protocols of `control.seams`), not the daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading

from edge_runtime import __version__
from edge_runtime.contract import COMMANDS, DeviceTopics, command_result
from edge_runtime.control.authority import ControlAuthority, ControlRefused
from edge_runtime.control.ratelimit import TokenBucket
from edge_runtime.control.seams import ModelService, Publish, StatsProvider

log = logging.getLogger("edge_runtime.commands")

#: commands waiting for the command thread; beyond, a command is answered "busy"
QUEUE_SIZE = 16

_STOP = object()


class CommandHandler:
    """Runs the commands of one device; `handle` is its MQTT handler. See the module docstring."""

    def __init__(self, models: ModelService, publish: Publish, topics: DeviceTopics, *, board: str,
                 stats: StatsProvider, authority: ControlAuthority, unsigned_info: bool = False,
                 queue_size: int = QUEUE_SIZE):
        self.models = models
        self.authority = authority
        self.unsigned_info = unsigned_info
        self.refusals = TokenBucket()
        self._publish = publish
        self.topics = topics
        self.board = board
        self._stats = stats
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="commands", daemon=True)
        self._thread.start()

    def handle(self, topic: str, payload: bytes) -> None:
        """Called on paho's network thread: queue the command, never wait."""
        name = DeviceTopics.command_name(topic)
        try:
            self._queue.put_nowait((name, payload))
        except queue.Full:
            if self.refusals.take():
                log.warning("command %s refused: %d commands are already waiting", name, self._queue.maxsize)
                self._reply(name, {}, {"ok": False, "error": f"busy: {self._queue.maxsize} commands are already "
                                                             "waiting"})

    def stop(self, timeout: float = 5.0) -> None:
        """End the command thread after the command it is running (the waiting ones are dropped)."""
        self._stopping = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):  # full again only if handle() raced: any item wakes the thread
            self._queue.put_nowait(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join(max(timeout, 0.0))

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._stopping:
                return
            name, payload = item
            try:
                self._run(name, payload)
            except Exception:  # the command thread must outlive any command
                log.exception("command %s failed", name)

    def _run(self, name: str, payload: bytes) -> None:
        try:
            request = self._authorize(name, payload)
        except ControlRefused as refused:
            if self.refusals.take():
                log.warning("command %s refused (%s): %s", name, refused.reason, refused)
                self._reply(name, {}, {"ok": False, "refused": refused.reason, "error": str(refused)})
            return
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            known = ", ".join(COMMANDS)
            self._reply(name, request, {"ok": False, "error": f"unknown command '{name}' (known: {known})"})
            return
        try:
            result = handler(request)
        except Exception as exc:
            log.warning("command %s failed: %s", name, exc)
            result = {"ok": False, "error": str(exc)}
        self._reply(name, request, result)

    def _authorize(self, name: str, payload: bytes) -> dict:
        """The command's arguments from its verified envelope (ControlRefused otherwise)."""
        try:
            return dict(self.authority.check(f"cmd/{name}", payload).body)
        except ControlRefused as refused:
            if name == "info" and self.unsigned_info and refused.reason == "unsigned":
                return {}  # allowed by the config (see the module docstring); still counted as unsigned
            raise

    def _reply(self, name: str, request: dict, result: dict) -> None:
        payload = json.dumps(command_result(request, result)).encode()
        self._publish(self.topics.command_result(name), payload, qos=1)

    def cmd_info(self, request: dict) -> dict:
        return {
            "ok": True,
            "device_id": self.topics.device_id,
            "version": __version__,
            "board": self.board,
            "models": self.models.describe(),
            "stats": self._stats(advance=False),  # a look must not reset the periodic stats' intervals
        }

    def cmd_reload(self, request: dict) -> dict:
        name = self.models.resolve(request.get("model"))
        bundle = self.models.configured_bundle(name)
        if request.get("bundle") not in (None, str(bundle)):
            return {"ok": False, "error": f"reload loads only the configured bundle ({bundle}); send another "
                                          "bundle with edge-fleet deploy"}
        model = self.models.install(name, bundle, allow_downgrade=request.get("allow_downgrade") is True)
        log.info("reloaded %s from %s", name, bundle)
        return {"ok": True, "model": name, **model.describe()}
