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

The receiver gets the model owner (it installs through `RunningModels.install`, like `reload`), a publish
function, a subscriber, the device's topics and its deploy config (the protocols of `control.seams`), not the
daemon. Topics and documents (`DeployRequest`, the deploy status) come from the contract.

Who may deploy: a request is a signed envelope (`edge_runtime.contract.control`) checked by the
`ControlAuthority`: signed by a control key, for this device (or its group), not expired; its nonce is used up when
the transfer starts (the same retained request seen again after a reconnect goes on with its transfer, a replay of
a finished one only repeats the outcome). An empty retained request (the fleet clearing what was answered) changes
nothing; withdrawing a rollout is a signed request too (`{"withdraw": "<deployment_id>"}`). Everything that can be
decided from the signed request is decided before a single chunk is fetched: the model, the size and chunk size
limits, whether this device can check a bundle's signature, and whether the version would be a rollback.

Bounded: one queue of `QUEUE_SIZE` items between paho's thread and the deploy thread. A request that does not fit
is dropped and counted; a chunk that does not fit is fetched again (its subscription is renewed, and the broker
sends the retained chunk once more), so a flood on the deploy topics costs a device neither memory nor a transfer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from edge_runtime import atomic
from edge_runtime.config import DeployConfig
from edge_runtime.contract import DeployRequest, DeviceTopics, FleetTopics, deploy_refused, deploy_status
from edge_runtime.control.authority import Authorized, ControlAuthority, ControlRefused
from edge_runtime.control.ratelimit import TokenBucket
from edge_runtime.control.seams import ModelService, Publish, Subscriber

log = logging.getLogger("edge_runtime.deploy")

#: chunk topics subscribed at once: bounds the memory a transfer takes and what a reconnect sends again
WINDOW = 16
#: messages waiting for the deploy thread (requests and chunks)
QUEUE_SIZE = 2 * WINDOW + 16
#: `receiving` progress messages at most this often (the first and the last are always sent)
PROGRESS_INTERVAL_S = 0.5
#: finished deployment ids remembered (a retained request is seen again after every reconnect)
FINISHED_KEEP = 200
FINISHED_FILE = "finished.json"
_CHUNK_FILE = re.compile(r"^(\d+)\.chunk$")
#: in a transfer folder: which signed request started it (a restarted device resumes that request, not a replay)
_STARTED = "started.json"


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
        return FleetTopics.chunk(self.request.chunk_topic, index)

    @property
    def complete(self) -> bool:
        return len(self.have) == self.request.chunks


class DeployReceiver:
    """Receives the deployments of one device; see the module docstring.

    `folder` keeps the chunks of the transfer in progress and the finished ids; `can_verify` says whether the
    device has trusted keys to check a bundle's signature with.
    """

    def __init__(self, models: ModelService, publish: Publish, subscriber: Subscriber, topics: DeviceTopics,
                 config: DeployConfig, folder: Path, can_verify: bool, authority: ControlAuthority):
        self.models = models
        self._publish_raw = publish
        self.subscriber = subscriber
        self.topics = topics
        self.config = config
        self.can_verify = can_verify
        self.folder = folder
        self.authority = authority
        self.refusals = TokenBucket()
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._renew: set[str] = set()  # chunk topics whose message did not fit the queue: subscribe again
        self._renew_lock = threading.Lock()
        self.dropped_requests = 0
        self.dropped_chunks = 0
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
        self.subscriber.subscribe(self.topics.deploy_request, 1, self._on_request, retained=True)

    def stop(self, timeout: float = 1.0) -> None:
        """End the deploy thread after what it is doing; chunks on disk stay for the next start."""
        self._stopping = True
        while True:  # make room for the stop marker
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(timeout, 0.0))

    # -- paho's thread: queue, never wait ------------------------------------------------------------------------
    def _on_request(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait(("request", topic, bytes(payload)))
        except queue.Full:
            self.dropped_requests += 1

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait(("chunk", topic, bytes(payload)))
        except queue.Full:
            self.dropped_chunks += 1
            with self._renew_lock:
                self._renew.add(topic)

    def stats(self) -> dict:
        """For the stats document."""
        return {"dropped_requests": self.dropped_requests, "dropped_chunks": self.dropped_chunks}

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
                self._renew_subscriptions()
            except Exception as exc:  # the deploy thread must outlive any deployment
                log.exception("deployment step failed")
                if self._active is not None:
                    self._fail(self._active.request, self._active.model, f"internal error: {exc}")

    def _renew_subscriptions(self) -> None:
        """Chunks dropped on a full queue: subscribing again makes the broker send the retained chunk again."""
        with self._renew_lock:
            topics, self._renew = self._renew, set()
        transfer = self._active
        for topic in topics:
            if transfer is not None and transfer.request.chunk_topic + "/" in topic:
                self.subscriber.unsubscribe(topic, self._on_chunk)
                self.subscriber.subscribe(topic, 1, self._on_chunk, retained=True)

    def _request(self, payload: bytes) -> None:
        if not payload.strip():  # the fleet cleared a request that was answered: nothing to do
            return
        try:
            authorized = self.authority.verify("deploy/request", payload)
        except ControlRefused as refused:
            self._refused(None, f"refused ({refused.reason}): {refused}")
            return
        body = authorized.body
        if "withdraw" in body:
            self._withdraw(authorized)
            return
        try:
            request = DeployRequest.model_validate(body)
        except ValidationError as exc:
            deployment_id = body.get("deployment_id")
            reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())
            self._refused(deployment_id if isinstance(deployment_id, str) else None, f"bad request: {reason}")
            return
        active = self._active
        if active is not None and active.request.deployment_id == request.deployment_id:
            return  # the same request again (a reconnect): the transfer goes on
        if request.deployment_id in self._finished:
            log.debug("deployment %s already finished: ignored", request.deployment_id)
            self._publish(self._finished[request.deployment_id])  # a fleet tool that restarted learns the end
            return
        try:
            self.authority.consume(authorized)
        except ControlRefused as refused:
            if not (refused.reason == "replay" and self._resumable(request, authorized)):
                self._refused(request.deployment_id, f"refused ({refused.reason}): {refused}")
                return
        if active is not None:
            log.info("deployment %s replaced by %s", active.request.deployment_id, request.deployment_id)
            self._abandon(remove=False)
        try:
            model = self.models.resolve(request.model)
            self._admissible(request, model)
        except Exception as exc:  # no such model, a limit, no keys to verify with, a rollback (RollbackRefused)
            self._fail(request, request.model, str(exc))
            return
        self._begin(request, model, authorized.claims.nonce)

    def _resumable(self, request: DeployRequest, authorized: Authorized) -> bool:
        """The same signed request whose transfer this device started before a restart: resume it (its nonce was
        used up when it started, and the transfer folder remembers which request that was)."""
        try:
            started = json.loads((self.folder / request.bundle_sha256 / _STARTED).read_text())
        except (OSError, ValueError):
            return False
        return started == {"deployment_id": request.deployment_id, "nonce": authorized.claims.nonce}

    def _admissible(self, request: DeployRequest, model: str) -> None:
        """Everything the signed request lets the device decide before it downloads anything."""
        limit = self.config.max_bundle_bytes
        if request.size > limit:
            raise DeployFailed(f"bundle of {request.size} bytes exceeds deploy.max_bundle_bytes ({limit})")
        if request.chunk_size > self.config.max_chunk_bytes:
            raise DeployFailed(f"chunks of {request.chunk_size} bytes exceed deploy.max_chunk_bytes "
                               f"({self.config.max_chunk_bytes})")
        self._signature_policy()
        self.models.check_version(model, request.version, request.created, request.allow_downgrade)

    def _withdraw(self, authorized: Authorized) -> None:
        """A signed withdrawal: abandon that transfer, and never start it again."""
        deployment_id = str(authorized.body.get("withdraw"))
        active = self._active
        if deployment_id in self._finished:
            return
        try:
            self.authority.consume(authorized)
        except ControlRefused as refused:
            self._refused(deployment_id, f"refused ({refused.reason}): {refused}")
            return
        if active is not None and active.request.deployment_id == deployment_id:
            log.info("deployment %s withdrawn by the fleet", deployment_id)
            self._fail(active.request, active.model, "withdrawn by the fleet", active)
        else:
            self._finished[deployment_id] = deploy_refused(deployment_id, self.topics.device_id,
                                                           "withdrawn by the fleet")
            self._save_finished()

    def _refused(self, deployment_id: str | None, error: str) -> None:
        """A request that is not accepted: always counted (by the authority), answered at a bounded rate."""
        if self.refusals.take():
            log.warning("deploy request refused: %s", error)
            self._publish(deploy_refused(deployment_id, self.topics.device_id, error))

    def _begin(self, request: DeployRequest, model: str, nonce: str) -> None:
        """Start (or resume) a transfer: keep the verified chunks already on disk, fetch the rest."""
        folder = self.folder / request.bundle_sha256
        for other in self.folder.iterdir():  # one transfer at a time: older partial ones only take space
            if other.is_dir() and other != folder:
                shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(folder / _STARTED, json.dumps({"deployment_id": request.deployment_id,
                                                          "nonce": nonce}).encode(), sync=False)
        transfer = _Transfer(request, model, folder)
        for path in folder.iterdir():
            if path.name == _STARTED:
                continue
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
                self.subscriber.subscribe(transfer.topic(index), 1, self._on_chunk, retained=True)

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
        # no fsync: a chunk is hashed again when a transfer resumes, so a power cut costs at most a re-fetch, and
        # an fsync per chunk would be slow on an SD card
        atomic.write_bytes(transfer.folder / f"{index}.chunk", payload, sync=False)
        transfer.have.add(index)
        transfer.downloaded += 1
        transfer.subscribed.discard(index)
        self.subscriber.unsubscribe(transfer.topic(index), self._on_chunk)
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
            model = self.models.install(transfer.model, assembled, write_over_configured=True,
                                        require_signature=self._signature_policy(),
                                        allow_downgrade=request.allow_downgrade)
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
        if not self.config.require_signature:
            return None  # the same policy as a local file (security.require_signature)
        if not self.can_verify:
            raise DeployFailed("this device has no security.trusted_keys, so it cannot verify a bundle sent over "
                               "MQTT (deploy.require_signature: false accepts unsigned bundles)")
        return True

    # -- endings --------------------------------------------------------------------------------------------------
    def _fail(self, request: DeployRequest, model: str | None, error: str, transfer: _Transfer | None = None) -> None:
        self._finish(self._document(request, model, "failed", transfer, error=error))

    def _finish(self, document: dict) -> None:
        """Remember the id (so the retained request is not applied again), drop the chunks, then report the end:
        whoever sees `installed` or `failed` finds the device already in that state (no chunk folder left)."""
        self._finished[document["deployment_id"]] = document
        while len(self._finished) > FINISHED_KEEP:
            del self._finished[next(iter(self._finished))]
        self._save_finished()
        if self._active is not None and self._active.request.deployment_id == document["deployment_id"]:
            self._abandon(remove=True)
        self._publish(document)

    def _abandon(self, remove: bool) -> None:
        transfer, self._active = self._active, None
        if transfer is None:
            return
        for index in transfer.subscribed:
            self.subscriber.unsubscribe(transfer.topic(index), self._on_chunk)
        if remove:
            shutil.rmtree(transfer.folder, ignore_errors=True)

    # -- reporting ------------------------------------------------------------------------------------------------
    def _document(self, request: DeployRequest, model: str | None, state: str, transfer: _Transfer | None = None,
                  error: str | None = None, **extra: object) -> dict:
        counters = {} if transfer is None else {"resumed": transfer.resumed, "downloaded": transfer.downloaded,
                                                "duplicates": transfer.duplicates, "bad_chunks": transfer.bad_chunks}
        return deploy_status(request.deployment_id, self.topics.device_id, state,
                             received=len(transfer.have) if transfer else 0, chunks=request.chunks, model=model,
                             sha256=request.bundle_sha256, error=error, **counters, **extra)

    def _progress(self, transfer: _Transfer, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - transfer.last_progress >= PROGRESS_INTERVAL_S:
            transfer.last_progress = now
            self._publish(self._document(transfer.request, transfer.model, "receiving", transfer))

    def _publish(self, document: dict) -> None:
        if self._stopping:
            return  # the link and spool are closing
        try:
            self._publish_raw(self.topics.deploy_status, json.dumps(document).encode(), qos=1)
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
            atomic.write_bytes(self.folder / FINISHED_FILE, data)
        except OSError:
            log.exception("cannot remember the finished deployments")


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
