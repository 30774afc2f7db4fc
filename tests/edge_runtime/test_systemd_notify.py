"""Under systemd (Type=notify, WatchdogSec=) the daemon says READY, pings the watchdog and says STOPPING."""

from __future__ import annotations

import os
import socket

from tests.support.daemon import DaemonProcess, wait_until, write_config


def test_ready_watchdog_and_stopping(tmp_path, broker, activity_bundle, monkeypatch):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    received: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                received.append(sock.recv(4096).decode())
        except TimeoutError:
            return received

    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: pings every 0.2 s
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "mqtt", "topic": "sensors/x"})
    daemon = DaemonProcess(config)
    try:
        assert wait_until(lambda: "READY=1" in drain(), 30), daemon.output()
        assert wait_until(lambda: drain().count("WATCHDOG=1") >= 3, 10)
    finally:
        assert daemon.terminate() == 0
    drain()
    assert "STOPPING=1" in received
    assert received.index("READY=1") < received.index("STOPPING=1")
    sock.close()
    os.unlink(address)
