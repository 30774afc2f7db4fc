"""The device side of `edge-fleet deploy`: fetch a bundle in chunks over MQTT, verify it, install it.

Protocol: docs/fleet-protocol.md ("Fleet -> device"). In short: a retained request on
`<prefix>/<device>/deploy/request` names the bundle (sha256, size, one sha256 per chunk) and the topic its
retained chunks sit under; the device stores each chunk only after its sha256 matched, in
`<spool dir>/deploy/<bundle sha256>/`, so a broker or daemon restart resumes with the chunks still missing; once
all are there it checks the whole file's sha256 and installs it exactly like `reload` (checksums, signature
against the trusted keys, golden output on this device's backend, same input shape), writes it over the
configured bundle path atomically and reports on `<prefix>/<device>/deploy/status`.

Why chunk topics are subscribed one by one, at most `WINDOW` at a time, rather than `<chunk_topic>/+`: every
(re)subscription makes the broker send every retained message the filter matches, so after a reconnect a `+`
filter would send the whole bundle again, and at the first subscription it pushes the whole bundle into the
device's memory at once. A chunk's own subscription is dropped as soon as it is stored: a reconnect re-sends only
chunks still missing, and at most `WINDOW` chunks are in flight (flow control for a board with little memory).

Threads: the MQTT handlers run on paho's network thread and only queue the message; one `deploy` thread does the
hashing, the file writes and the (seconds long) verification and load, so the network loop never stalls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.commands import install_bundle, resolve_model

if TYPE_CHECKING:
    from edge_runtime.daemon import Daemon

log = logging.getLogger("edge_runtime.deploy")

#: chunk topics subscribed at once: bounds the memory a transfer takes and what a reconnect sends again
WINDOW = 16
#: `receiving` progress messages at most this often (the first and the last are always sent)
PROGRESS_INTERVAL_S = 0.5
#: finished deployment ids remembered (a retained request is seen again after every reconnect)
FINISHED_KEEP = 200
FINISHED_FILE = "finished.json"
_CHUNK_FILE = re.compile(r"^(\d+)\.chunk$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DeployRequest(BaseModel):
    """`<prefix>/<device>/deploy/request`; unknown keys are ignored so a newer fleet tool can add some."""

    model_config = ConfigDict(extra="ignore")

    deployment_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    bundle_sha256: str = Field(pattern=_SHA256.pattern)
    size: int = Field(gt=0)
    chunk_size: int = Field(gt=0)
    chunks: int = Field(gt=0)
    chunk_sha256: list[str]
    chunk_topic: str = Field(min_length=1)
    model: str | None = None
    name: str | None = None
    version: str | None = None
    ts: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeployRequest:
        expected = -(-self.size // self.chunk_size)
        if self.chunks != expected:
            raise ValueError(f"{self.size} bytes in chunks of {self.chunk_size} make {expected} chunks, "
                             f"not {self.chunks}")
        if len(self.chunk_sha256) != self.chunks:
            raise ValueError(f"{len(self.chunk_sha256)} chunk_sha256 entries for {self.chunks} chunks")
        if not all(_SHA256.match(digest) for digest in self.chunk_sha256):
            raise ValueError("every chunk_sha256 entry must be 64 lowercase hex digits")
        if "+" in self.chunk_topic or "#" in self.chunk_topic or self.chunk_topic.endswith("/"):
            raise ValueError(f"chunk_topic {self.chunk_topic!r} must be a topic name without wildcards")
        return self


class DeployFailed(Exception):
    """A deployment that cannot go on; the message is the `error` reported to the fleet."""


@dataclass
class _Transfer:
    """The one deployment being received."""

    request: DeployRequest
    model: str
    folder: Path
    have: set[int] = field(default_factory=set)
    subscribed: set[int] = field(default_factory=set)
    resumed: int = 0  # chunks found verified on disk when this transfer (re)started
    downloaded: int = 0  # chunks stored from the broker by this process
    duplicates: int = 0  # chunk messages for chunks already stored
    bad_chunks: int = 0  # chunk messages whose sha256 did not match (dropped)
    last_progress: float = 0.0
    cursor: int = 0  # every chunk below it is stored or subscribed: the window moves forward only

    def topic(self, index: int) -> str:
        return f"{self.request.chunk_topic}/{index}"

    @property
    def complete(self) -> bool:
        return len(self.have) == self.request.chunks


class DeployReceiver:
    """Receives deployments for one daemon; see the module docstring."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        config = daemon.config
        base = f"{config.topic_prefix}/{config.device_id}/deploy"
        self.request_topic = f"{base}/request"
        self.status_topic = f"{base}/status"
        self.folder = Path(config.spool.path).parent / "deploy"
        self._queue: queue.Queue = queue.Queue()
        self._stopping = False
        self._active: _Transfer | None = None
        self._finished: dict[str, dict] = {}
        self._thread = threading.Thread(target=self._serve, name="deploy", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the request (retained too: that is how a device that was offline gets the rollout)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._finished = self._load_finished()
        self._thread.start()
        self.daemon.link.subscribe(self.request_topic, 1, self._on_request, retained=True)

    def stop(self, timeout: float = 1.0) -> None:
        """End the deploy thread after what it is doing; chunks on disk stay for the next start."""
        self._stopping = True
        self._queue.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(timeout, 0.0))

    # -- paho's thread: queue, never wait ------------------------------------------------------------------------
    def _on_request(self, topic: str, payload: bytes) -> None:
        self._queue.put(("request", topic, bytes(payload)))

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        self._queue.put(("chunk", topic, bytes(payload)))

    # -- the deploy thread ----------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping:
                return
            kind, topic, payload = item
            try:
                if kind == "request":
                    self._request(payload)
                else:
                    self._chunk(topic, payload)
            except Exception as exc:  # the deploy thread must outlive any deployment
                log.exception("deployment step failed")
                if self._active is not None:
                    self._fail(self._active.request, self._active.model, f"internal error: {exc}")

    def _request(self, payload: bytes) -> None:
        if not payload.strip():  # the fleet cleared the retained request: a rollout withdrawn (or finished)
            if self._active is not None:
                log.info("deployment %s withdrawn by the fleet", self._active.request.deployment_id)
                self._abandon(remove=True)
            return
        try:
            document = json.loads(payload)
        except ValueError as exc:
            self._publish({"deployment_id": None, "state": "failed", "error": f"bad request: not JSON ({exc})"})
            return
        try:
            request = DeployRequest.model_validate(document)
        except ValidationError as exc:
            deployment_id = document.get("deployment_id") if isinstance(document, dict) else None
            reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
            self._publish({"deployment_id": deployment_id if isinstance(deployment_id, str) else None,
                           "state": "failed", "error": f"bad request: {reason}"})
            return
        active = self._active
        if active is not None and active.request.deployment_id == request.deployment_id:
            return  # the same request again (a reconnect): the transfer goes on
        if request.deployment_id in self._finished:
            log.debug("deployment %s already finished: ignored", request.deployment_id)
            self._publish(self._finished[request.deployment_id])  # a fleet tool that restarted learns the end
            return
        if active is not None:
            log.info("deployment %s replaced by %s", active.request.deployment_id, request.deployment_id)
            self._abandon(remove=False)
        try:
            model = resolve_model(self.daemon, request.model)
            limit = self.daemon.config.deploy.max_bundle_bytes
            if request.size > limit:
                raise DeployFailed(f"bundle of {request.size} bytes exceeds deploy.max_bundle_bytes ({limit})")
        except (ValueError, DeployFailed) as exc:
            self._fail(request, request.model, str(exc))
            return
        self._begin(request, model)

    def _begin(self, request: DeployRequest, model: str) -> None:
        """Start (or resume) a transfer: keep the verified chunks already on disk, fetch the rest."""
        folder = self.folder / request.bundle_sha256
        for other in self.folder.iterdir():  # one transfer at a time: older partial ones only take space
            if other.is_dir() and other != folder:
                shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        transfer = _Transfer(request, model, folder)
        for path in folder.iterdir():
            match = _CHUNK_FILE.match(path.name)
            index = int(match.group(1)) if match else -1
            if 0 <= index < request.chunks and _sha256_file(path) == request.chunk_sha256[index]:
                transfer.have.add(index)
            else:
                path.unlink(missing_ok=True)  # a torn write, a leftover temp file, a chunk of another layout
        transfer.resumed = len(transfer.have)
        self._active = transfer
        log.info("deployment %s: bundle %s (%d bytes, %d chunks) for model %s; %d chunks already on disk",
                 request.deployment_id, request.bundle_sha256[:12], request.size, request.chunks, model,
                 transfer.resumed)
        self._progress(transfer, force=True)
        if transfer.complete:
            self._complete(transfer)
        else:
            self._fill_window(transfer)

    def _fill_window(self, transfer: _Transfer) -> None:
        while len(transfer.subscribed) < WINDOW and transfer.cursor < transfer.request.chunks:
            index = transfer.cursor
            transfer.cursor += 1
            if index not in transfer.have:
                transfer.subscribed.add(index)
                self.daemon.link.subscribe(transfer.topic(index), 1, self._on_chunk, retained=True)

    def _chunk(self, topic: str, payload: bytes) -> None:
        transfer = self._active
        prefix = None if transfer is None else transfer.request.chunk_topic + "/"
        if transfer is None or not topic.startswith(prefix) or not payload:
            return  # late message of an abandoned transfer, or a cleared retained chunk
        try:
            index = int(topic[len(prefix):])
        except ValueError:
            return
        if not 0 <= index < transfer.request.chunks:
            return
        if index in transfer.have:
            transfer.duplicates += 1
            return
        if hashlib.sha256(payload).hexdigest() != transfer.request.chunk_sha256[index]:
            transfer.bad_chunks += 1
            log.warning("deployment %s: chunk %d has the wrong sha256: dropped (%d so far)",
                        transfer.request.deployment_id, index, transfer.bad_chunks)
            return
        _write_atomically(transfer.folder / f"{index}.chunk", payload, sync=False)
        transfer.have.add(index)
        transfer.downloaded += 1
        transfer.subscribed.discard(index)
        self.daemon.link.unsubscribe(transfer.topic(index), self._on_chunk)
        if transfer.complete:
            self._progress(transfer, force=True)
            self._complete(transfer)
        else:
            self._progress(transfer)
            self._fill_window(transfer)

    def _complete(self, transfer: _Transfer) -> None:
        """Every chunk is there: assemble, check the whole file, install like `reload`, report."""
        request = transfer.request
        self._publish(self._document(request, transfer.model, "verifying", transfer))
        assembled = transfer.folder / "bundle"
        try:
            digest = hashlib.sha256()
            with open(assembled, "wb") as out:
                for index in range(request.chunks):
                    data = (transfer.folder / f"{index}.chunk").read_bytes()
                    digest.update(data)
                    out.write(data)
                size = out.tell()
            if size != request.size or digest.hexdigest() != request.bundle_sha256:
                raise DeployFailed(f"the assembled bundle ({size} bytes, sha256 {digest.hexdigest()}) does not "
                                   f"match the request ({request.size} bytes, sha256 {request.bundle_sha256})")
            model = install_bundle(self.daemon, transfer.model, assembled,
                                   replace=self.daemon.workers[transfer.model].config.bundle,
                                   require_signature=self._signature_policy())
        except Exception as exc:  # anything (bad signature, golden mismatch, other input, disk): the old model runs
            log.warning("deployment %s refused: %s", request.deployment_id, exc)
            self._fail(request, transfer.model, str(exc), transfer)
            return
        description = model.describe()
        log.info("deployment %s installed: %s %s (%s)", request.deployment_id, transfer.model,
                 description["version"], description["precision"])
        self._finish(self._document(request, transfer.model, "installed", transfer, version=description["version"],
                                    model_sha256=description["model_sha256"], precision=description["precision"],
                                    signature=description["signature"]))

    def _signature_policy(self) -> bool | None:
        """A bundle from the network must be signed by a trusted key (unless `deploy.require_signature: false`)."""
        if not self.daemon.config.deploy.require_signature:
            return None  # the same policy as a local file (security.require_signature)
        if not self.daemon.trusted_keys:
            raise DeployFailed("this device has no security.trusted_keys, so it cannot verify a bundle sent over "
                               "MQTT (deploy.require_signature: false accepts unsigned bundles)")
        return True

    # -- endings --------------------------------------------------------------------------------------------------
    def _fail(self, request: DeployRequest, model: str | None, error: str, transfer: _Transfer | None = None) -> None:
        self._finish(self._document(request, model, "failed", transfer, error=error))

    def _finish(self, document: dict) -> None:
        """Report the end, remember the id (so the retained request is not applied again), drop the chunks."""
        self._publish(document)
        self._finished[document["deployment_id"]] = document
        while len(self._finished) > FINISHED_KEEP:
            del self._finished[next(iter(self._finished))]
        self._save_finished()
        if self._active is not None and self._active.request.deployment_id == document["deployment_id"]:
            self._abandon(remove=True)

    def _abandon(self, remove: bool) -> None:
        transfer, self._active = self._active, None
        if transfer is None:
            return
        for index in transfer.subscribed:
            self.daemon.link.unsubscribe(transfer.topic(index), self._on_chunk)
        if remove:
            shutil.rmtree(transfer.folder, ignore_errors=True)

    # -- reporting ------------------------------------------------------------------------------------------------
    def _document(self, request: DeployRequest, model: str | None, state: str, transfer: _Transfer | None = None,
                  error: str | None = None, **extra: object) -> dict:
        document = {
            "deployment_id": request.deployment_id,
            "device_id": self.daemon.config.device_id,
            "state": state,
            "received": len(transfer.have) if transfer else 0,
            "chunks": request.chunks,
            "model": model,
            "sha256": request.bundle_sha256,
            "error": error,
            "ts": time.time(),
        }
        if transfer is not None:
            document.update(resumed=transfer.resumed, downloaded=transfer.downloaded,
                            duplicates=transfer.duplicates, bad_chunks=transfer.bad_chunks)
        document.update(extra)
        return document

    def _progress(self, transfer: _Transfer, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - transfer.last_progress >= PROGRESS_INTERVAL_S:
            transfer.last_progress = now
            self._publish(self._document(transfer.request, transfer.model, "receiving", transfer))

    def _publish(self, document: dict) -> None:
        if self._stopping:
            return  # the link and spool are closing
        document.setdefault("device_id", self.daemon.config.device_id)
        document.setdefault("ts", time.time())
        try:
            self.daemon.link.publish(self.status_topic, json.dumps(document).encode(), qos=1)
        except Exception:
            log.exception("cannot publish the deployment status")

    # -- finished ids ---------------------------------------------------------------------------------------------
    def _load_finished(self) -> dict[str, dict]:
        path = self.folder / FINISHED_FILE
        try:
            entries = json.loads(path.read_text())["finished"]
            return {entry["deployment_id"]: entry for entry in entries}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s): finished deployments are forgotten", path, exc)
            return {}

    def _save_finished(self) -> None:
        data = json.dumps({"finished": list(self._finished.values())}).encode()
        try:
            _write_atomically(self.folder / FINISHED_FILE, data)
        except OSError:
            log.exception("cannot remember the finished deployments")


def _write_atomically(path: Path, data: bytes, sync: bool = True) -> None:
    """A file that is complete or absent. `sync=False` for chunks: they are hashed again when a transfer resumes,
    so a power cut costs at most a re-fetch, and an fsync per chunk would be slow on an SD card."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
