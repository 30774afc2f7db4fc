"""Commands over MQTT: `edge/<device>/cmd/<name>` -> `edge/<device>/cmd/<name>/result`.

    info                      the device, its models and their backends
    reload {"model", "bundle"} load a bundle (default: the configured path), verify its signature against the
                              trusted keys, reproduce its golden output, then swap it in between two batches.
                              Any failure keeps the running model and says why.

Commands run on their own thread: a reload that takes seconds must not stall the MQTT network loop.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime import __version__

if TYPE_CHECKING:
    from edge_runtime.daemon import Daemon

log = logging.getLogger("edge_runtime.commands")


class CommandHandler:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self._lock = threading.Lock()  # one command at a time: two reloads must not interleave

    def handle(self, topic: str, payload: bytes) -> None:
        name = topic.rsplit("/", 1)[-1]
        threading.Thread(target=self._run, args=(name, payload), name=f"cmd-{name}", daemon=True).start()

    def _run(self, name: str, payload: bytes) -> None:
        try:
            request = json.loads(payload) if payload.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("the command payload must be a JSON object")
        except ValueError as exc:
            self._reply(name, {}, {"ok": False, "error": f"bad request: {exc}"})
            return
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self._reply(name, request, {"ok": False, "error": f"unknown command '{name}' (known: info, reload)"})
            return
        with self._lock:
            try:
                result = handler(request)
            except Exception as exc:
                log.warning("command %s failed: %s", name, exc)
                result = {"ok": False, "error": str(exc)}
        self._reply(name, request, result)

    def _reply(self, name: str, request: dict, result: dict) -> None:
        if "request_id" in request:
            result["request_id"] = request["request_id"]
        topic = self.daemon.topics.command_result(name)
        self.daemon.link.publish(topic, json.dumps(result).encode(), qos=1)

    def cmd_info(self, request: dict) -> dict:
        daemon = self.daemon
        return {
            "ok": True,
            "device_id": daemon.config.device_id,
            "version": __version__,
            "board": daemon.board.name,
            "models": [worker.describe() for worker in daemon.workers.values()],
            "stats": daemon.stats(),
        }

    def cmd_reload(self, request: dict) -> dict:
        daemon = self.daemon
        name = request.get("model")
        if name is None:
            if len(daemon.workers) != 1:
                raise ValueError(f"say which model to reload: {', '.join(daemon.workers)}")
            name = next(iter(daemon.workers))
        if name not in daemon.workers:
            raise ValueError(f"no model '{name}' (models: {', '.join(daemon.workers)})")
        worker = daemon.workers[name]
        bundle = Path(request["bundle"]) if request.get("bundle") else worker.config.bundle
        model = daemon.load_model(worker.config, bundle)  # raises on a bad signature or golden mismatch
        if model.card is None or worker.card.input.kind != model.card.input.kind:
            model.close()
            raise ValueError("the new bundle takes a different kind of input than the running model")
        model.name = name
        worker.swap(model)
        daemon.link.publish_direct(daemon.topics.status, daemon.status("online"), qos=1, retain=True)
        log.info("reloaded %s from %s", name, bundle)
        return {"ok": True, "model": name, **model.describe()}
