"""The broker address: one parser for every URL a person types, in the daemon's config and on `edge-fleet`'s
command line.

Why one parser: the daemon and the fleet tool used to parse URLs two ways, so `edge-fleet deploy --broker
host:1883` passed the command line's check and was then refused by the deploy command. Now both call
`parse_broker_url`, accept the same URLs and refuse the others with the same one-line message.

Accepted: `mqtt://host[:port]` (port 1883), `mqtts://host[:port]` (TLS, port 8883), a bare `host[:port]` (mqtt),
and a user name (`mqtts://fleet@host`). Refused: another scheme, no host, a port out of range, and a password in
the URL: a URL ends up in process lists, shell histories and logs, so the password comes from elsewhere (the
daemon's `password_env`/`password_file`, edge-fleet's `$EDGE_FLEET_MQTT_PASSWORD`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import ParseResult, unquote, urlparse

MQTT_PORT = 1883
MQTTS_PORT = 8883
SCHEMES = {"mqtt": False, "mqtts": True}  # scheme -> TLS
EXAMPLE = "mqtt://host:1883 or mqtts://host:8883"


class BrokerUrlError(ValueError):
    """A broker URL that is refused; the message is one line that names the URL and says what to write."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: what a paho client needs to connect (credentials other than the user name and the TLS
    files come from elsewhere, see the module docstring)."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """`url` as a BrokerAddress; BrokerUrlError (a ValueError) with a one-line reason if it is refused."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise BrokerUrlError(f"broker url {url!r} is empty: it must look like {EXAMPLE}")
    parsed = urlparse(text if "://" in text else f"mqtt://{text}")
    if parsed.scheme not in SCHEMES:
        raise BrokerUrlError(f"broker url {url!r}: the scheme must be mqtt:// or mqtts:// (like {EXAMPLE})")
    if parsed.password is not None:
        raise BrokerUrlError(f"broker url {_redacted(parsed)!r}: no credentials inside the url (the daemon takes "
                             "username with password_env or password_file, edge-fleet $EDGE_FLEET_MQTT_PASSWORD)")
    try:
        port = parsed.port
    except ValueError:
        raise BrokerUrlError(f"broker url {url!r}: the port must be a number from 1 to 65535") from None
    if not parsed.hostname:
        raise BrokerUrlError(f"broker url {url!r} names no host: it must look like {EXAMPLE}")
    if port == 0:
        raise BrokerUrlError(f"broker url {url!r}: the port must be a number from 1 to 65535")
    tls = SCHEMES[parsed.scheme]
    username = unquote(parsed.username) if parsed.username else None
    return BrokerAddress(text, parsed.hostname, port or (MQTTS_PORT if tls else MQTT_PORT), tls, username)


def _redacted(parsed: ParseResult) -> str:
    """The URL with its password replaced, for the error message."""
    host = parsed.netloc.rpartition("@")[2]
    return f"{parsed.scheme}://{parsed.username or ''}:***@{host}"
