"""Commands over MQTT: `edge/<device>/cmd/<name>` -> `edge/<device>/cmd/<name>/result`.

    info                      the device, its models and their backends
    reload {"model", "bundle"} load a bundle (default: the configured path), verify its signature against the
                              trusted keys, reproduce its golden output, then swap it in between two batches.
                              Any failure keeps the running model and says why.

Commands run one at a time on one command thread, fed by a bounded queue: a reload that takes seconds must not
stall the MQTT network loop, and a flood of commands must not make a thread each. When `QUEUE_SIZE` commands are
already waiting, a new one is answered `{"ok": false, "error": "busy ..."}` at once. Retained command messages
are not delivered to the handler (the daemon subscribes with `retained=False`): a retained `reload` would run
again after every reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime import __version__
from edge_runtime.bundle import _fsync_directory

if TYPE_CHECKING:
    from edge_runtime.daemon import Daemon
    from edge_runtime.model_loader import LoadedModel

log = logging.getLogger("edge_runtime.commands")

#: commands waiting for the command thread; beyond, a command is answered "busy"
QUEUE_SIZE = 16

_STOP = object()


class CommandHandler:
    def __init__(self, daemon: Daemon, queue_size: int = QUEUE_SIZE):
        self.daemon = daemon
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="commands", daemon=True)
        self._thread.start()

    def handle(self, topic: str, payload: bytes) -> None:
        """Called on paho's network thread: queue the command, never wait."""
        name = topic.rsplit("/", 1)[-1]
        try:
            self._queue.put_nowait((name, payload))
        except queue.Full:
            log.warning("command %s refused: %d commands are already waiting", name, self._queue.maxsize)
            self._reply(name, _request_id_only(payload),
                        {"ok": False, "error": f"busy: {self._queue.maxsize} commands are already waiting"})

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
            "stats": daemon.stats(advance=False),  # a look must not reset the periodic stats' intervals
        }

    def cmd_reload(self, request: dict) -> dict:
        daemon = self.daemon
        name = resolve_model(daemon, request.get("model"))
        bundle = Path(request["bundle"]) if request.get("bundle") else daemon.workers[name].config.bundle
        model = install_bundle(daemon, name, bundle)
        log.info("reloaded %s from %s", name, bundle)
        return {"ok": True, "model": name, **model.describe()}


#: one install (reload or deploy) at a time: both swap a worker's model, and a deploy also replaces its file
_INSTALL_LOCK = threading.Lock()


def resolve_model(daemon: Daemon, name: str | None) -> str:
    """The running model a reload or deployment is for: `name`, or the only one; ValueError says what exists."""
    if name is None:
        if len(daemon.workers) != 1:
            raise ValueError(f"say which model: {', '.join(daemon.workers)}")
        return next(iter(daemon.workers))
    if name not in daemon.workers:
        raise ValueError(f"no model '{name}' (models: {', '.join(daemon.workers)})")
    return name


def install_bundle(daemon: Daemon, name: str, bundle: Path, replace: Path | None = None,
                   require_signature: bool | None = None) -> LoadedModel:
    """Load `bundle` (checksums, signature, golden output), swap it in for model `name`, republish the status.

    Shared by `reload` and deployments. Any failure raises and leaves the running model (and its file) alone.
    With `replace`, the bundle is also written over that path (temp file in the same folder, then `os.replace`)
    so a restart runs it: the temp copy is made before the swap (a full disk fails before anything changed) and
    renamed after it; if the rename fails, the old bundle is loaded back.
    """
    with _INSTALL_LOCK:
        worker = daemon.workers[name]
        policy = {} if require_signature is None else {"require_signature": require_signature}
        model = daemon.load_model(worker.config, bundle, **policy)
        model.name = name
        temp = None
        try:
            if replace is not None:
                temp = _copy_beside(bundle, replace)
            worker.swap(model)  # refused unless the input has the same kind and shape; the old model keeps running
        except BaseException:
            model.close()
            if temp is not None:
                temp.unlink(missing_ok=True)
            raise
        if replace is not None:
            try:
                os.replace(temp, replace)
                _fsync_directory(replace.parent)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                _restore(daemon, name)
                raise OSError(f"cannot write {replace}: {exc}; the previous bundle runs again") from None
            model.bundle.path = replace  # the same bytes (verified), now where the config points
        daemon.link.publish_direct(daemon.topics.status, daemon.status("online"), qos=1, retain=True)
        return model


def _copy_beside(source: Path, target: Path) -> Path:
    """`source` copied (and fsynced) to a temp file next to `target`, ready for an atomic `os.replace`."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _restore(daemon: Daemon, name: str) -> None:
    """After a failed file replace: run the configured (old) bundle again, so memory and disk agree."""
    worker = daemon.workers[name]
    try:
        old = daemon.load_model(worker.config)
        old.name = name
        worker.swap(old)
    except Exception:
        log.exception("model %s: could not load %s back; the new model keeps running until a restart", name,
                      worker.config.bundle)


def _request_id_only(payload: bytes) -> dict:
    """The request's `request_id` (if it has one), for answering a command that will not run."""
    try:
        request = json.loads(payload)
    except ValueError:
        return {}
    return {"request_id": request["request_id"]} if isinstance(request, dict) and "request_id" in request else {}
