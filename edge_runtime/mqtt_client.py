"""The one place a paho client is created and configured, for the daemon's `MqttLink` and the fleet tool's
clients (`FastClient` of the monitor and simulator, `edge-fleet deploy`'s connection).

Why: three wrappers used to set up paho three ways (callback API, protocol, TLS files, credentials), so TLS or a
password worked in one tool and not in another. Each wrapper keeps what is its own (the daemon's spool and
drainer, the fleet's one-thread epoll loop, deploy's queue of messages); how a client is made from a broker
address, credentials and TLS files is written here once.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import paho.mqtt.client as mqtt

from edge_runtime.contract.broker import BrokerAddress

ClientT = TypeVar("ClientT", bound=mqtt.Client)


@dataclass(frozen=True)
class ClientSettings:
    """What a client needs besides its callbacks: where, who, how securely, which protocol."""

    address: BrokerAddress
    client_id: str
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: str | None = None
    tls: bool | None = None  # None: as the address says (mqtts://)
    ca_file: Path | str | None = None  # None: the system's CAs
    cert_file: Path | str | None = None
    key_file: Path | str | None = None
    tls_insecure: bool = False  # skip hostname verification (test brokers only)
    keepalive_s: int = 60
    no_delay: bool = False  # TCP_NODELAY on every new socket

    @property
    def uses_tls(self) -> bool:
        return self.address.tls if self.tls is None else self.tls


def create_client(settings: ClientSettings, client_class: type[ClientT] = mqtt.Client,  # type: ignore[assignment]
                  **kwargs: Any) -> ClientT:
    """A paho client with the VERSION2 callback API, configured from `settings`; not connected yet.

    `client_class` is a paho Client subclass (the fleet's FastClient); `kwargs` go to its constructor.
    Credentials: `settings.username`, else the user name in the URL.
    """
    if settings.protocol == "5":
        client = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                              protocol=mqtt.MQTTv5, **kwargs)
    else:  # v3.1.1 sessions are clean unless the caller says otherwise
        kwargs.setdefault("clean_session", True)
        client = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                              protocol=mqtt.MQTTv311, **kwargs)
    username = settings.username or settings.address.username
    if username or settings.password:
        client.username_pw_set(username, settings.password)
    if settings.uses_tls:
        client.tls_set(ca_certs=_text(settings.ca_file), certfile=_text(settings.cert_file),
                       keyfile=_text(settings.key_file))
        client.tls_insecure_set(settings.tls_insecure)
    if settings.no_delay:
        client.on_socket_open = no_delay
    return client


def diagnose_tls(settings: ClientSettings, timeout_s: float = 5.0) -> str | None:
    """Why a TLS connection to the broker fails, in one line (None if the handshake works or TLS is not used).

    paho reports a failed connect without its cause; a certificate problem (an unknown CA, an expired or wrong
    client certificate, a hostname mismatch) is the operator's to fix, so it is worth one handshake of our own to
    say which. The server checks a client certificate after a TLS 1.3 handshake, so a short read follows it.
    """
    import ssl

    if not settings.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=_text(settings.ca_file))
        if settings.tls_insecure:
            context.check_hostname = False
        if settings.cert_file:
            context.load_cert_chain(_text(settings.cert_file), _text(settings.key_file))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"the TLS files cannot be used: {exc}"
    address = settings.address
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=address.host) as tls:
            tls.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the broker's certificate is not trusted: {exc.verify_message} (check tls.ca_file)"
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        hint = (" (the broker refused this device's certificate: check tls.cert_file/key_file and the CA that "
                "signed them)" if "ALERT" in reason.upper() or "CERTIFICATE" in reason.upper() else "")
        return f"TLS handshake failed: {reason}{hint}"
    except OSError:
        return None  # not a TLS problem: the broker is down or unreachable
    return None


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Send small MQTT packets at once: with Nagle's algorithm a message can wait for the broker's delayed ACK
    (tens of milliseconds) on an otherwise idle connection."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _text(path: Path | str | None) -> str | None:
    return str(path) if path else None
