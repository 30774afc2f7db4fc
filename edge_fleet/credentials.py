"""Where every `edge-fleet` command takes its broker credentials and TLS files from, in one place.

The user name comes from the broker URL (`mqtts://fleet@host`), the password from `$EDGE_FLEET_MQTT_PASSWORD`
(never the URL: it would end up in shell histories), the CA of a private broker from `$EDGE_FLEET_CA_FILE`, and a
client certificate for a broker that asks for one (mTLS) from `$EDGE_FLEET_CERT_FILE` and `$EDGE_FLEET_KEY_FILE`.
A password over `mqtt://` travels in clear text: said once, as a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from edge_runtime.contract import BrokerAddress

log = logging.getLogger("edge_fleet")

PASSWORD_ENV = "EDGE_FLEET_MQTT_PASSWORD"
CA_ENV = "EDGE_FLEET_CA_FILE"
CERT_ENV = "EDGE_FLEET_CERT_FILE"
KEY_ENV = "EDGE_FLEET_KEY_FILE"


@dataclass(frozen=True)
class FleetCredentials:
    username: str | None
    password: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


def fleet_credentials(address: BrokerAddress, username: str | None = None, password: str | None = None,
                      ca_file: str | None = None) -> FleetCredentials:
    """The credentials for `address`: the arguments first, then the URL and the environment."""
    username = username or address.username
    if password is None and username:
        password = os.environ.get(PASSWORD_ENV) or None
    if password and not address.tls:
        log.warning("broker %s: the password is sent in clear text over mqtt://; use mqtts:// (TLS)", address.url)
    return FleetCredentials(username, password if username else None, ca_file or os.environ.get(CA_ENV) or None,
                            os.environ.get(CERT_ENV) or None, os.environ.get(KEY_ENV) or None)
