"""The daemon: load every model, connect to the broker, start the sources, publish until told to stop.

Topics and documents (status, stats, predictions, drift, errors, commands, deployments) are those of the wire
contract, `edge_runtime.contract` (table in docs/fleet-protocol.md). The running models are owned by
`control.models.RunningModels`; the command handler and the deploy receiver get it, the link's publish and the
topics, not the daemon. The daemon wires them together, runs the periodic stats and drift reports, and drains on
stop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

from edge_runtime import __version__, systemd
from edge_runtime.board import Board
from edge_runtime.config import DaemonConfig, ModelConfig
from edge_runtime.contract import TOPIC_LEVEL, DeviceTopics, StatsDocument, offline_will, status_document
from edge_runtime.control.authority import ControlAuthority
from edge_runtime.control.commands import CommandHandler
from edge_runtime.control.deploy import DeployReceiver
from edge_runtime.control.models import RunningModels
from edge_runtime.control.nonces import NonceCache
from edge_runtime.control.versions import InstalledVersions
from edge_runtime.error_reporter import ErrorReporter
from edge_runtime.hardware.detect import resolve_board
from edge_runtime.metrics import DeviceStats
from edge_runtime.model_loader import LoadedModel, load_bundle_model
from edge_runtime.model_worker import ModelWorker
from edge_runtime.mqtt_link import MqttLink, WillMessage
from edge_runtime.signing import load_trusted_keys
from edge_runtime.sources import create_source
from edge_runtime.sources.base import Source, SourceContext
from edge_runtime.spool import Spool

log = logging.getLogger("edge_runtime.daemon")

#: how often `wait` looks at `stop_requested` (set by a signal handler)
STOP_POLL_S = 0.2


def source_health(source: Source | None, health: dict) -> dict:
    """`{"source_health": ...}` for a source that reports its own state (a camera: connected or reconnecting,
    frames decoded and delivered; the frames the model dropped come from the worker's count), else nothing."""
    report = getattr(source, "health", None)
    if not callable(report):
        return {}
    try:
        found = report()
    except Exception:  # health reporting must never take the stats down
        log.exception("source health failed")
        return {}
    if isinstance(found.get("frames"), dict):
        found["frames"]["dropped"] = health.get("dropped", 0)
    return {"source_health": found}


class Daemon:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.topics = DeviceTopics(config.topic_prefix, config.device_id)
        self.detection = resolve_board(config.board)  # the config's board, or the one this machine is
        self.board: Board = self.detection.board
        security = config.security
        self.trusted_keys = load_trusted_keys(security.trusted_keys) if security.trusted_keys else None
        self.control_keys = load_trusted_keys(security.control_keys) if security.control_keys else []
        self.state_dir = Path(config.spool.path).parent
        self.device = DeviceStats(self.board.thermal_zone, self.board.throttled_file,
                                  memory_budget_mb=self.board.memory_budget_mb)
        # with trusted keys, every bundle must be signed whatever require_signature says (docs/security.md)
        self.require_signature = security.require_signature or bool(self.trusted_keys)
        self.models = RunningModels(self._load_bundle, self.require_signature, on_change=self._publish_online,
                                    versions=InstalledVersions(self.state_dir / "installed.json"))
        self.authority = ControlAuthority(
            self.control_keys, self.topics, config.group, NonceCache(self.state_dir / "control-nonces.json"),
            max_lifetime_s=security.control_max_lifetime_s, clock_skew_s=security.control_clock_skew_s)
        self.security_warnings = self._security_warnings()
        self.sources: dict[str, Source] = {}
        self.started = time.time()
        self._stop = threading.Event()
        #: set by a signal handler: a plain attribute, because Event.set() there could deadlock against the main
        #: thread inside Event.wait(); `wait` polls it
        self.stop_requested = False
        self.spool: Spool | None = None
        self.link: MqttLink | None = None
        self.errors: ErrorReporter | None = None
        self.commands: CommandHandler | None = None
        self.deployer: DeployReceiver | None = None
        self._link_started = False

    @property
    def workers(self) -> dict[str, ModelWorker]:
        """The model workers by name (owned by `self.models`)."""
        return self.models.workers

    # -- models -------------------------------------------------------------------------------------------------
    def _load_bundle(self, config: ModelConfig, bundle: Path, require_signature: bool) -> LoadedModel:
        """The loader of `RunningModels`: verify (checksums, signature, golden output) and warm up one bundle on
        this board's backends."""
        return load_bundle_model(
            bundle,
            name=config.name,
            backends=config.backends,
            board=self.board,
            trusted_keys=self.trusted_keys,
            require_signature=require_signature,
            max_bundle_bytes=self.config.security.max_bundle_bytes,
        )

    def _security_warnings(self) -> list[str]:
        """What makes this device easier to subvert than it should be: logged loudly at start, and in the status
        document so the fleet sees it too."""
        config = self.config
        warnings = []
        if not self.require_signature:
            warnings.append("UNSIGNED BUNDLES ACCEPTED: no security.trusted_keys, so any bundle file runs; configure "
                            "trusted_keys (docs/security.md)")
        elif config.security.trusted_keys and not config.security.require_signature:
            log.info("security.require_signature: false is overridden: with trusted keys every bundle must be signed")
        if not self.control_keys:
            log.warning("no security.control_keys: commands (except an allowed unsigned info) and deployments are "
                        "refused")
        if config.deploy.enabled and not config.deploy.require_signature and not self.trusted_keys:
            warnings.append("deployments of unsigned bundles accepted (deploy.require_signature: false)")
        cleartext = config.broker.cleartext_password_warning()
        if cleartext:
            warnings.append(cleartext)
        for warning in warnings:
            log.warning("SECURITY WARNING: %s", warning)
        return warnings

    def security_summary(self) -> dict:
        """The `security` block of the status document."""
        return {"bundle_signatures": "required" if self.require_signature else "not required",
                "control": "signed" if self.control_keys else "disabled",
                "unsigned_info": self.config.security.unsigned_info, "warnings": self.security_warnings}

    # -- publishing ---------------------------------------------------------------------------------------------
    def _publish_predictions(self, model: str, payloads: list[bytes]) -> None:
        topic = self.topics.predictions(model)
        self.link.publish_many([(topic, payload, self.config.publish.predictions_qos, False) for payload in payloads])

    def _publish_drift(self, model: str, report: dict) -> None:
        qos = self.config.publish.drift_qos
        self.link.publish(self.topics.drift(model), json.dumps(report).encode(), qos=qos)

    def _publish_snapshot(self, model: str, payload: bytes) -> None:
        """Retained: a dashboard that connects later sees the latest snapshot at once."""
        self.link.publish(self.topics.snapshot(model), payload, qos=1, retain=True)

    def _publish_error(self, payload: bytes) -> None:
        self.link.publish(self.topics.errors, payload, qos=self.config.publish.errors_qos)

    def status(self, state: str) -> bytes:
        config = self.config
        document = status_document(state, device_id=config.device_id, group=config.group, version=__version__,
                                   host=socket.gethostname(), board=self.board.name, started=self.started,
                                   models=self.models.describe(), board_detection=self.detection.as_dict(),
                                   device=self.device.board_health(), security=self.security_summary())
        return json.dumps(document).encode()

    def stats(self, advance: bool = True) -> StatsDocument:
        """Health numbers; `advance=False` (the `info` command) leaves the periodic throughput and CPU intervals
        alone, so a look in between does not change what the next `stats` message says."""
        models = {}
        # copies: start() may still be filling these when an early `info` command asks
        workers, sources = list(self.workers.items()), dict(self.sources)
        for name, worker in workers:
            health = worker.health(advance=advance)
            drift = health.pop("drift")  # the key order of the document stays as it was: drift last
            models[name] = {**health, "source_finished": sources[name].finished if name in sources else None,
                            **source_health(sources.get(name), health), "drift": drift}
        link, errors = self.link, self.errors
        return {
            "ts": time.time(),
            "device_id": self.config.device_id,
            "interval_s": self.config.publish.stats_interval_s,
            "uptime_s": round(time.time() - self.started, 1),
            "models": models,
            "device": self.device.snapshot(advance=advance),
            "mqtt": link.stats() if link else {},
            "errors_suppressed": errors.suppressed if errors else 0,
            "control": {**self.authority.stats(), **(self.deployer.stats() if self.deployer else {})},
        }

    def _publish_online(self) -> None:
        """The retained `online` status: at every connect, and after an install changed a model."""
        if self.link is not None:
            self.link.publish_direct(self.topics.status, self.status("online"), qos=1, retain=True)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        config = self.config
        self.spool = Spool(config.spool.path, config.spool.max_messages)
        offline = offline_will(config.device_id, config.group)
        will = WillMessage(self.topics.status, json.dumps(offline).encode(), qos=1, retain=True)
        client_id = config.broker.client_id or f"edge-runtime-{config.device_id}"
        self.link = MqttLink(config.broker, client_id, self.spool, will=will, on_connect=self._publish_online)
        self.errors = ErrorReporter(self._publish_error, config.publish.errors_per_second, config.device_id)
        for model_config in config.models:
            model = self.models.load(model_config)
            try:
                if not TOPIC_LEVEL.match(model.name):
                    origin = "`name` in the config" if model_config.name else f"the name in {model_config.bundle}"
                    raise ValueError(f"model name {model.name!r} ({origin}) cannot be part of an MQTT topic: use "
                                     "letters, digits, '_', '.' and '-', starting with a letter or digit")
                if model.name in self.models:
                    raise ValueError(f"two models are named '{model.name}': give one of them a `name`")
                self.models.add(ModelWorker(
                    model, model_config, publish=self._publish_predictions, reserve_seqs=self.spool.next_seqs,
                    errors=self.errors, publish_drift=self._publish_drift,
                    publish_snapshot=self._publish_snapshot,
                ))
            except BaseException:
                model.close()
                raise
        self.commands = CommandHandler(self.models, self.link.publish, self.topics, board=self.board.name,
                                       stats=self.stats, authority=self.authority,
                                       unsigned_info=config.security.unsigned_info)
        # a retained command would run again after every reconnect: only live commands count
        self.link.subscribe(self.topics.commands, 1, self.commands.handle, retained=False)
        if config.deploy.enabled:  # subscribes before the link starts: the retained request comes with the connect
            self.deployer = DeployReceiver(self.models, self.link.publish, self.link, self.topics, config.deploy,
                                           folder=Path(config.spool.path).parent / "deploy",
                                           can_verify=bool(self.trusted_keys), authority=self.authority)
            self.deployer.start()
        self._link_started = True
        self.link.start()
        for name, worker in self.workers.items():
            worker.start()
            context = SourceContext(card=worker.card, sink=worker, subscriber=self.link,
                                    max_message_bytes=config.max_message_bytes)
            source = create_source(worker.config.source, context)
            self.sources[name] = source
            source.start()
        threading.Thread(target=self._stats_loop, name="stats", daemon=True).start()
        threading.Thread(target=self._drift_loop, name="drift", daemon=True).start()
        systemd.notify("READY=1")
        log.info("running %d model(s) on %s as %s", len(self.workers), self.board.name, config.device_id)

    def _stats_loop(self) -> None:
        interval = self.config.publish.stats_interval_s
        while not self._stop.wait(interval):
            try:
                payload = json.dumps(self.stats()).encode()
                self.link.publish(self.topics.stats, payload, qos=self.config.publish.stats_qos)
            except Exception:  # health reporting must never take the daemon down
                log.exception("stats failed")

    def _drift_loop(self) -> None:
        """Each model's drift message every `drift.interval_s` (state changes are published at once by the worker)."""
        due = {name: time.monotonic() + worker.config.drift.interval_s for name, worker in self.workers.items()}
        while not self._stop.wait(min(0.5, *(w.config.drift.interval_s for w in self.workers.values()))):
            now = time.monotonic()
            for name, worker in list(self.workers.items()):
                if now < due.get(name, 0):
                    continue
                due[name] = now + worker.config.drift.interval_s
                try:
                    report = worker.drift.report()
                    if report is not None:
                        self._publish_drift(name, report)
                except Exception:  # drift reporting must never take the daemon down
                    log.exception("drift report for %s failed", name)

    def stop_when_sources_finish(self) -> None:
        """For replays and benchmarks: stop once every source is finished and every queue is empty."""

        def watch() -> None:
            while not self._stop.wait(0.2):
                if all(source.finished for source in self.sources.values()) and all(
                    worker.queue_depth == 0 and worker.idle for worker in self.workers.values()
                ):
                    self._stop.set()

        threading.Thread(target=watch, name="exit-when-done", daemon=True).start()

    def request_stop(self) -> None:
        """Ask `wait` to return; safe in a signal handler (it only sets an attribute)."""
        self.stop_requested = True

    def wait(self) -> None:
        """Block until a stop is requested, pinging the systemd watchdog meanwhile.

        Polls `stop_requested` every STOP_POLL_S rather than being woken: a signal handler must not touch the
        Event this thread is waiting on.
        """
        interval = systemd.watchdog_interval_s()
        next_ping = time.monotonic() + interval if interval else None
        while not self.stop_requested and not self._stop.is_set():
            timeout = STOP_POLL_S if next_ping is None else min(STOP_POLL_S, max(next_ping - time.monotonic(), 0))
            self._stop.wait(timeout)
            if next_ping is not None and time.monotonic() >= next_ping:
                systemd.notify("WATCHDOG=1")
                next_ping = time.monotonic() + interval

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Drain: stop the sources, finish queued windows, deliver the spool, publish `stopped`.

        `drain_timeout` bounds the whole drain. Safe after a start() that failed part way. The spool is closed
        only once every worker thread has ended: one still running would write to a closed database.
        """
        deadline = time.monotonic() + drain_timeout

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        systemd.notify("STOPPING=1")
        self.stop_requested = True
        self._stop.set()
        for source in list(self.sources.values()):
            try:
                source.stop()
            except Exception:
                log.exception("stopping a source failed")
        if self.commands is not None:  # a reload in progress may finish on its own: it must not eat the drain time
            self.commands.stop(timeout=min(remaining(), 1.0))
        if self.deployer is not None:  # the same for a deployment being verified
            self.deployer.stop(timeout=min(remaining(), 1.0))
        workers = list(self.workers.values())
        for worker in workers:
            try:
                worker.stop(drain=True, timeout=remaining())
            except Exception:
                log.exception("stopping model %s failed", worker.name)
        alive = [worker.name for worker in workers if worker.alive]
        if self.link is not None and self._link_started:
            try:
                self.link.flush(remaining())
                self.link.stop(final=[(self.topics.status, self.status("stopped"), 1, True)], timeout=remaining())
            except Exception:
                log.exception("stopping the MQTT connection failed")
        if alive:
            log.error("model(s) %s still running after %.1f s: the spool stays open so they can finish writing",
                      ", ".join(alive), drain_timeout)
        elif self.spool is not None:
            self.spool.close()
        log.info("stopped")
