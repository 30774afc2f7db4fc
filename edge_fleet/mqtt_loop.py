"""One thread and one selector (epoll) driving many paho clients: the monitor's fast path and the simulator.

Why not `loop_start()`: it costs a thread per client and calls `select()`, which fails for file descriptors above
1023, so a process with 1,000 simulated devices cannot use it. paho's documented external-loop API
(`loop_read`, `loop_write`, `loop_misc`, `on_socket_close`) lets one thread serve them all.

Why a buffered socket: paho reads a packet with at least three `recv` calls (command byte, length bytes, body)
and writes every PUBACK with its own `send`. Under load that is four system calls per small message.
`BufferedSocket` reads up to 256 KiB at once and hands paho the bytes from memory, and collects what paho writes
until the loop flushes it after a burst, so the PUBACKs of a burst leave in one `send`. This doubles what one
monitor process ingests (see docs/benchmarks.md).

Everything that touches a client runs on the loop thread; other threads hand work over with `call_soon`.
Clients are made by `fast_client` through the shared factory (edge_runtime/mqtt_client.py), which configures
credentials and TLS as for the daemon; only the socket and the loop are this module's own.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.mqtt_client import ClientSettings, create_client

log = logging.getLogger("edge_fleet.mqtt")

RECV_SIZE = 256 * 1024
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    """Wraps paho's socket: big reads served from memory, writes collected until `flush()`."""

    __slots__ = ("sock", "_buf", "_pos", "_out", "_dirty", "writing")

    def __init__(self, sock: Any, dirty: Callable[[BufferedSocket], None]):
        self.sock = sock
        self._buf = b""
        self._pos = 0
        self._out = bytearray()
        self._dirty = dirty
        self.writing = False  # registered for EVENT_WRITE (the kernel buffer was full at the last flush)

    # -- what paho calls ---------------------------------------------------------------------------------------
    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self.sock.recv(RECV_SIZE)  # raises BlockingIOError when nothing is there: paho expects that
            if len(data) <= size:
                return data
            self._buf, self._pos = data, 0
        start = self._pos
        self._pos = start + size
        return self._buf[start:start + size]

    def send(self, data: bytes | bytearray) -> int:
        if not self._out:
            self._dirty(self)
        self._out += data
        return len(data)

    def pending(self) -> int:
        """Bytes readable without waiting for the socket (what paho asks an SSL socket)."""
        inner = self.sock.pending() if hasattr(self.sock, "pending") else 0
        return len(self._buf) - self._pos + inner

    def close(self) -> None:
        """paho closes right after writing DISCONNECT: hand what is collected to the kernel first. One non-blocking
        send, not a blocking one: with 1,000 devices stopping, a hung broker must not cost a timeout each; the
        kernel still delivers what it accepted after close()."""
        if self._out:
            with contextlib.suppress(OSError, ValueError):
                self.sock.send(bytes(self._out))
            self._out.clear()
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    # -- what the loop calls -----------------------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        return len(self._out)

    def flush(self) -> bool:
        """Write what paho handed over; True when all of it left. A dead connection is shut down, so paho sees
        it on its next read and runs its usual connection-lost path."""
        out = self._out
        try:
            while out:
                sent = self.sock.send(out)
                del out[:sent]
        except _WOULD_BLOCK:
            return False
        except OSError:
            out.clear()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        return True


class FastClient(mqtt.Client):
    """A paho client whose connections are `BufferedSocket`s of a `ClientLoop`.

    `_create_socket` is paho's private factory (stable since 2.0); overriding it is the one place where the
    socket can be wrapped before paho writes CONNECT on it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fleet_loop: ClientLoop | None = None
        self.fleet_sock: BufferedSocket | None = None
        self.fleet_attempts = 0
        self.fleet_stopping = False
        self.fleet_next_misc = 0.0

    def _create_socket(self) -> Any:
        assert self.fleet_loop is not None, "add the client to a ClientLoop before connecting"
        sock = super()._create_socket()
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fleet_sock = BufferedSocket(sock, self.fleet_loop._mark_dirty)
        return self.fleet_sock


def fast_client(settings: ClientSettings, **kwargs: Any) -> FastClient:
    """A FastClient configured from `settings` (protocol, client id, credentials, TLS) by the shared factory.
    TCP_NODELAY is set by `FastClient._create_socket` itself, before paho writes CONNECT."""
    return create_client(settings, FastClient, **kwargs)


class ClientLoop:
    """Runs paho clients on one thread: connects with exponential backoff, reads, writes, keeps alive."""

    def __init__(self, name: str = "mqtt-loop", reconnect_min_s: float = 0.2, reconnect_max_s: float = 10.0,
                 connect_timeout_s: float = 5.0):
        self.name = name
        # paho's TCP connect blocks the loop thread: an unreachable broker (SYNs dropped) costs this per attempt
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._soon: list[Callable[[], None]] = []
        self._soon_lock = threading.Lock()
        self._dirty: list[BufferedSocket] = []
        self._clients: list[FastClient] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- scheduling (thread-safe: call_soon; loop thread only: call_at/call_later) ---------------------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        with self._soon_lock:
            self._soon.append(fn)
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.call_at(time.monotonic() + delay, fn)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._counter), fn))

    @property
    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # -- clients -------------------------------------------------------------------------------------------------
    def add(self, client: FastClient, host: str, port: int, keepalive: int = 60, delay: float = 0.0) -> None:
        """Connect `client` (after `delay` seconds) and keep it connected until `remove`. Thread-safe."""
        client.fleet_loop = self
        client.connect_timeout = self.connect_timeout_s
        client.on_socket_close = self._socket_closed
        client.connect_async(host, port, keepalive)  # only stores host, port and keepalive

        def first() -> None:
            self._clients.append(client)
            self.call_later(delay, lambda: self._connect(client))

        self.call_soon(first)

    def remove(self, client: FastClient, disconnect: bool = True) -> None:
        """Stop reconnecting `client`; with `disconnect`, send DISCONNECT (no last will). Loop thread only."""
        client.fleet_stopping = True
        if client in self._clients:
            self._clients.remove(client)
        if disconnect and client.fleet_sock is not None:
            client.disconnect()

    def _connect(self, client: FastClient) -> None:
        if client.fleet_stopping or self._stopping.is_set():
            return
        try:
            client.reconnect()
        except (OSError, ssl.SSLError) as exc:
            client.fleet_attempts += 1
            if client.fleet_attempts in (1, 10) or client.fleet_attempts % 100 == 0:
                log.warning("%s: cannot connect (%s), attempt %d", client._client_id.decode(), exc,
                            client.fleet_attempts)
            self._schedule_reconnect(client)
            return
        sock = client.fleet_sock
        if sock is not None:
            self._selector.register(sock, selectors.EVENT_READ, client)
            client.fleet_next_misc = time.monotonic() + 1.0

    def _schedule_reconnect(self, client: FastClient) -> None:
        delay = min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(client.fleet_attempts, 16))
        self.call_later(delay * random.uniform(0.5, 1.0), lambda: self._connect(client))

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho closes its socket (lost, keepalive expired, or after DISCONNECT): forget it, maybe reconnect."""
        assert isinstance(client, FastClient)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        if sock in self._dirty:
            self._dirty.remove(sock)
        client.fleet_sock = None
        if client.fleet_stopping or self._stopping.is_set():
            return
        client.fleet_attempts += 1
        self._schedule_reconnect(client)

    def _mark_dirty(self, sock: BufferedSocket) -> None:
        self._dirty.append(sock)

    # -- running -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect every client cleanly (their wills are not published) and end the thread."""

        def close_all() -> None:
            for client in list(self._clients):
                self.remove(client)
            self._flush()
            self._stopping.set()

        if self._thread is None:  # never started (or stopped already): only the selector to close
            self._close()
            return
        self.call_soon(close_all)
        if not self.on_loop_thread:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._close()

    def _close(self) -> None:
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        misc_every = 0.5
        next_misc = time.monotonic() + misc_every
        while not self._stopping.is_set():
            now = time.monotonic()
            timeout = min(next_misc, self._timers[0][0] if self._timers else next_misc) - now
            try:
                events = self._selector.select(max(timeout, 0.0))
            except OSError:  # a client socket closed under us; the next round sees the state
                events = []
            for key, mask in events:
                client = key.data
                if client is None:
                    self._drain_wake()
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(client)
                if mask & selectors.EVENT_WRITE and client.fleet_sock is not None:
                    client.loop_write()
            self._run_soon()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn = heapq.heappop(self._timers)
                self._guard(fn)
            if now >= next_misc:
                next_misc = now + misc_every
                for client in list(self._clients):
                    if client.fleet_sock is not None:
                        client.loop_misc()
                    if client.fleet_sock is not None and client.want_write():
                        client.loop_write()
            self._flush()

    def _read(self, client: FastClient) -> None:
        sock = client.fleet_sock
        if sock is None:
            return
        rc = client.loop_read()
        # paho handles one packet per loop_read call; the rest of this read is already in memory
        while rc == mqtt.MQTT_ERR_SUCCESS and client.fleet_sock is sock and sock.pending():
            rc = client.loop_read()
        if client.fleet_sock is not None and client.want_write():
            client.loop_write()  # what callbacks queued (paho does not write from inside a callback)
        if client.fleet_attempts and client.is_connected():
            client.fleet_attempts = 0

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sock in dirty:
            done = sock.flush()
            if done == sock.writing:  # interest changes: blocked now, or drained after being blocked
                sock.writing = not done
                client = self._client_of(sock)
                if client is not None:
                    events = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._selector.modify(sock, events, client)
            if not done:
                self._dirty.append(sock)

    def _client_of(self, sock: BufferedSocket) -> FastClient | None:
        try:
            return self._selector.get_key(sock).data
        except (KeyError, ValueError):
            return None

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def _run_soon(self) -> None:
        if not self._soon:
            return
        with self._soon_lock:
            work, self._soon = self._soon, []
        for fn in work:
            self._guard(fn)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("mqtt loop: a scheduled call failed")
