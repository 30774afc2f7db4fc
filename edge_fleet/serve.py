"""`edge-fleet serve`: the fleet dashboard, a JSON API and Prometheus metrics over plain HTTP.

The standard library's `ThreadingHTTPServer` on purpose: a handful of read-only routes do not justify a web
framework in a package that also installs on devices. Routes:

    /                      the dashboard (one self-contained HTML file: no CDN, works without internet)
    /api/fleet             FleetState.snapshot()
    /api/alerts            {"ts", "alerts": FleetState.alerts()}
    /api/devices/<id>      the device plus its history for charts (?window=3600 seconds, at most retention)
    /api/snapshots/<id>/<model>.jpg   the latest snapshot a detector published (image/jpeg)
    /metrics               Prometheus text format, computed at scrape time
    /healthz               liveness, with the MQTT monitor's and the history's counters

Who may look: the server listens on 127.0.0.1 unless `--http HOST:PORT` says otherwise (the fleet's names, groups
and versions are reconnaissance for an attacker). With a token (`--token-file FILE` or `$EDGE_FLEET_TOKEN`) every
route but `/healthz` needs it: `Authorization: Bearer <token>` (Prometheus' `authorization` setting), or once
`/?token=<token>` in a browser, which sets an HttpOnly cookie for the page's own requests. With `--tls-cert` and
`--tls-key` it serves HTTPS. Listening on another interface without a token is allowed, with a warning.

Messages change `FleetState` on the MQTT thread; the history is written by a recorder thread of its own, so a
slow disk or another process holding the SQLite lock never stalls the MQTT network loop.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from edge_fleet.history import FleetHistory

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 3600.0
TOKEN_ENV = "EDGE_FLEET_TOKEN"
COOKIE = "edge_fleet_token"
MAX_POINTS = 720  # per series in one /api/devices answer: a day at 10 s sampling would be 8,640 points
CHART_METRICS = ("throughput", "latency_p95", "drift")


def dashboard_html() -> bytes:
    """The page, read from the package (it ships in the wheel next to this module)."""
    return resources.files("edge_fleet").joinpath("static/dashboard.html").read_bytes()


class HistoryRecorder:
    """Feeds `FleetHistory` from `FleetState` on a thread of its own.

    The state's listener only marks a device dirty (cheap, never blocks, safe whatever lock the state holds while
    it calls listeners); this thread records the dirty devices, and every `sweep_every_s` all devices, so a device
    that goes silent (offline by staleness, no message at all) still gets its transition and its chart keeps its
    samples."""

    def __init__(self, state: Any, history: FleetHistory, *, sweep_every_s: float | None = None,
                 coalesce_s: float = 0.5, clock: Callable[[], float] = time.time):
        self.state = state
        self.coalesce_s = coalesce_s
        self.history = history
        self.sweep_every_s = history.sample_every_s if sweep_every_s is None else sweep_every_s
        self.clock = clock
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-history", daemon=True)
        self.errors = 0

    def notify(self, device_id: str, kind: str) -> None:
        """`FleetState` listener."""
        with self._lock:
            self._dirty.add(device_id)
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.05, next_sweep - time.monotonic()))
            if self._stop.is_set():
                break
            self._wake.clear()
            sweep = time.monotonic() >= next_sweep
            if sweep:
                next_sweep = time.monotonic() + self.sweep_every_s
            self.flush(sweep=sweep)
            # a busy fleet wakes this thread on every message: what arrives meanwhile is recorded in one go
            self._stop.wait(self.coalesce_s)

    def flush(self, sweep: bool = False) -> int:
        """Record the dirty devices (all devices with `sweep`); returns how many were looked at."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        devices = self.state.devices() if sweep else [self.state.device(device_id) for device_id in sorted(dirty)]
        devices = [device for device in devices if device is not None]
        try:
            self.history.record_many(devices, self.clock())
        except Exception:  # an odd device must not end the recorder thread
            self.errors += 1
            log.exception("fleet history: recording %d device(s) failed", len(devices))
        return len(devices)


def _downsample(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[list[float]]:
    """At most `limit` points, keeping the first and the last: a browser needs no more than a chart is wide."""
    if len(points) <= limit:
        return [[ts, value] for ts, value in points]
    step = len(points) / limit
    picked = [points[min(len(points) - 1, int(i * step))] for i in range(limit - 1)] + [points[-1]]
    return [[ts, value] for ts, value in picked]


def device_document(state: Any, history: FleetHistory, device_id: str, window_s: float,
                    now: float | None = None) -> dict | None:
    """What `/api/devices/<id>` answers: the device now, and its series over the window for the charts. None for a
    device neither the state nor the history knows."""
    now = time.time() if now is None else now
    device = state.device(device_id)
    since = now - window_s
    models = history.models(device_id, since)
    if device is None and not models and not history.knows(device_id):
        return None
    for name in device.models if device is not None else []:
        if name not in models:
            models.append(name)
    series = {name: {metric: _downsample(history.series(device_id, metric, since, model=name))
                     for metric in CHART_METRICS} for name in models}
    return {
        "ts": now,
        "device_id": device_id,
        "device": device.as_dict() if device is not None else None,
        "window_s": window_s,
        "since": since,
        "series": series,
        "online": [[ts, state_name] for ts, state_name in history.online_history(device_id, since)],
        "deploys": history.deploys(device_id, since),
        "sample_every_s": history.sample_every_s,
    }


class FleetHandler(BaseHTTPRequestHandler):
    """The routes; `server` carries the state, history and registry (see `build_server`)."""

    server: FleetHTTPServer
    server_version = "edge-fleet"
    protocol_version = "HTTP/1.1"  # keep-alive for the page's polling
    timeout = 120  # an idle keep-alive connection (a closed laptop) frees its thread

    def _authorized(self, url: Any) -> bool:
        """No token configured, or the request carries it (header, cookie, or `?token=` which sets the cookie)."""
        token = self.server.token
        if token is None or url.path == "/healthz":
            return True
        offered = []
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered.append(header[len("Bearer "):].strip())
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                offered.append(value)
        from_query = parse_qs(url.query).get("token", [])
        offered += from_query
        ok = any(hmac.compare_digest(candidate.encode(), token.encode()) for candidate in offered)
        self._set_cookie = ok and bool(from_query)
        return ok

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        url = urlsplit(self.path)
        path = url.path
        self._set_cookie = False
        if not self._authorized(url):
            self._json({"error": "a token is needed: Authorization: Bearer <token>, or open /?token=<token>"},
                       HTTPStatus.UNAUTHORIZED)
            return
        try:
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
            elif path == "/api/fleet":
                self._json(self.server.state.snapshot())
            elif path == "/api/alerts":
                self._json({"ts": time.time(), "alerts": self.server.state.alerts()})
            elif path.startswith("/api/devices/") and len(path) > len("/api/devices/"):
                self._device(unquote(path[len("/api/devices/"):]), parse_qs(url.query))
            elif path.startswith("/api/snapshots/"):
                self._snapshot(path[len("/api/snapshots/"):])
            elif path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                self._json(self.server.health())
            else:
                self._json({"error": f"no such page: {path}"}, HTTPStatus.NOT_FOUND)
        except BrokenPipeError:
            pass
        except Exception:
            log.exception("GET %s failed", path)
            self._json({"error": "internal error, see the server log"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_HEAD(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self._set_cookie = False
        if not self._authorized(url):
            self._send(HTTPStatus.UNAUTHORIZED, b"", "text/plain")
            return
        self._send(HTTPStatus.OK if url.path in ("/", "/healthz") else HTTPStatus.NOT_FOUND, b"", "text/plain")

    def _device(self, device_id: str, query: dict[str, list[str]]) -> None:
        history = self.server.history
        try:
            window_s = float(query.get("window", [DEFAULT_WINDOW_S])[0])
        except ValueError:
            window_s = math.nan
        if not math.isfinite(window_s) or window_s <= 0:
            self._json({"error": "window must be a positive number of seconds"}, HTTPStatus.BAD_REQUEST)
            return
        document = device_document(self.server.state, history, device_id, min(window_s, history.retention_s))
        if document is None:
            self._json({"error": f"unknown device {device_id!r}"}, HTTPStatus.NOT_FOUND)
        else:
            self._json(document)

    def _snapshot(self, rest: str) -> None:
        """`<device>/<model>.jpg`: the JPEG bytes from the state's bounded store."""
        device_id, _, model = rest.removesuffix(".jpg").partition("/")
        store = getattr(self.server.state, "snapshots", None)
        jpeg = store.get(unquote(device_id), unquote(model)) if store is not None and model else None
        if jpeg is None:
            self._json({"error": f"no snapshot of {model!r} on {device_id!r}"}, HTTPStatus.NOT_FOUND)
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")

    def _metrics(self) -> None:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)

    def _json(self, document: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        try:
            body = json.dumps(document, default=str, allow_nan=False)
        except ValueError:  # NaN or inf from a device: JSON.parse in the browser refuses them
            body = json.dumps(_without_nan(document), default=str)
        self._send(status, body.encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if getattr(self, "_set_cookie", False):
            secure = "; Secure" if self.server.tls else ""
            self.send_header("Set-Cookie", f"{COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/{secure}")
        if content_type.startswith("text/html"):
            # the page needs nothing but itself and this server: say so, so an injected script could not phone out
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)


def _without_nan(value: Any) -> Any:
    """NaN/inf as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(item) for item in value]
    return value


class FleetHTTPServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` that knows the fleet."""

    daemon_threads = True  # a hanging browser connection must not hold up shutdown
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: Any, history: FleetHistory,
                 health: Callable[[], dict] | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None):
        from edge_fleet.exporter import registry_for

        self.token = token or None
        self.tls = tls
        self.state = state
        self.history = history
        self.registry = registry_for(state)
        self.page = dashboard_html()
        self._health = health
        if ":" in address[0]:  # an IPv6 literal: the base class is IPv4 only
            self.address_family = socket.AF_INET6
        super().__init__(address, FleetHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def health(self) -> dict:
        extra = self._health() if self._health is not None else {}
        return {"status": "ok", "ts": time.time(), "devices": len(self.state.devices()),
                "history_writes": self.history.writes, **extra}


def build_server(state: Any, history: FleetHistory, host: str, port: int,
                 health: Callable[[], dict] | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None) -> FleetHTTPServer:
    """The HTTP server, bound but not serving yet (call `serve_forever`, in a thread for tests; port 0 picks a free
    port: read it from `server.server_address`)."""
    return FleetHTTPServer((host, port), state, history, health, token=token, tls=tls)


def parse_http(value: str | None) -> tuple[str, int]:
    """`host:port`, `:port` (loopback: 127.0.0.1) or `[::1]:port`; every interface is `0.0.0.0:port`, said
    explicitly."""
    value = (value or "127.0.0.1:8080").strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {value!r}: expected host:port or :port")
    host = host.strip("[]")
    return host or "127.0.0.1", int(port)


def read_token(path: str | None) -> str | None:
    """The dashboard token: the file's first line, else $EDGE_FLEET_TOKEN, else None (no token)."""
    if path:
        token = Path(path).read_text().strip()
        if len(token) < 16:
            raise ValueError(f"--token-file {path}: the token must be at least 16 characters")
        return token
    return os.environ.get(TOKEN_ENV) or None


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def main_serve(args: Any) -> int:
    """Run the dashboard until SIGTERM or Ctrl-C. `args`: broker, http, history, retention_days, share_group,
    prefix (the `edge-fleet serve` options)."""
    try:
        import prometheus_client  # noqa: F401 (checked here for a clear message rather than at the first scrape)
    except ImportError:
        print("edge-fleet serve needs prometheus-client: pip install prometheus-client", file=sys.stderr)
        return 2
    from edge_fleet.monitor import FleetMonitor
    from edge_fleet.state import FleetState

    prefix = getattr(args, "prefix", None) or "edge"
    try:
        host, port = parse_http(getattr(args, "http", None))
        token = read_token(getattr(args, "token_file", None))
        tls = tls_context(getattr(args, "tls_cert", None), getattr(args, "tls_key", None))
    except (ValueError, OSError, ssl.SSLError) as error:
        print(f"edge-fleet serve: {error}", file=sys.stderr)
        return 2
    if host not in ("127.0.0.1", "::1", "localhost") and token is None:
        print(f"edge-fleet serve: WARNING: listening on {host} without a token: anyone who reaches this port sees "
              "the fleet (--token-file or $EDGE_FLEET_TOKEN)", file=sys.stderr)
    retention_days = float(getattr(args, "retention_days", 7.0) or 7.0)
    history_path = Path(getattr(args, "history", None) or "fleet-history.sqlite")
    state = FleetState(prefix=prefix)
    try:
        history = FleetHistory(history_path, retention_days=retention_days)
    except Exception as error:  # sqlite3.Error, OSError: an unwritable path or a file that is not a database
        print(f"edge-fleet serve: cannot open the history {history_path}: {error}", file=sys.stderr)
        return 2
    try:
        monitor = FleetMonitor(args.broker, state, share_group=getattr(args, "share_group", None), prefix=prefix)
    except ValueError as error:  # a broker URL or share group it cannot use
        print(f"edge-fleet serve: {error}", file=sys.stderr)
        history.close()
        return 2
    recorder = HistoryRecorder(state, history)
    state.add_listener(recorder.notify)
    try:
        server = build_server(state, history, host, port, health=lambda: {"monitor": _safe(monitor.stats)},
                              token=token, tls=tls)
    except OSError as error:
        print(f"edge-fleet serve: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        history.close()
        return 2
    stop = threading.Event()
    previous = _install_signals(stop)
    http_thread = threading.Thread(target=server.serve_forever, name="fleet-http", daemon=True)
    code = 0
    try:
        recorder.start()
        monitor.start()
        http_thread.start()
        bound_host, bound_port = server.server_address[:2]
        scheme = "https" if tls is not None else "http"
        url = (f"{scheme}://[{bound_host}]:{bound_port}/" if ":" in bound_host
               else f"{scheme}://{bound_host}:{bound_port}/")
        log.info("fleet dashboard on %s (history %s)", url, history_path)
        print(f"edge-fleet serve: {url}  metrics: {url}metrics  history: {history_path}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    except Exception as error:  # e.g. the monitor refusing the broker URL
        log.exception("fleet serve failed")
        print(f"edge-fleet serve: {error}", file=sys.stderr)
        code = 1
    finally:
        if http_thread.is_alive():
            server.shutdown()  # returns once serve_forever has ended (it would wait forever if it never ran)
        server.server_close()
        _safe(monitor.stop)
        recorder.stop()
        recorder.flush(sweep=True)  # the last states (e.g. "stopped") make it into the file
        history.close()
        _restore_signals(previous)
    return code


def _safe(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:
        log.exception("fleet serve: %s failed", getattr(call, "__name__", call))
        return {"error": str(error)}


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM (systemd, docker stop) and SIGINT end the loop cleanly; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


__all__ = ["FleetHTTPServer", "HistoryRecorder", "build_server", "device_document", "main_serve",
           "parse_http"]
