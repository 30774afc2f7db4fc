"""`edge-fleet serve` is not an open window on the fleet: loopback by default, a token when one is configured
(header, or a cookie set by `/?token=`), HTTPS with a certificate."""

from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.request

import pytest

from edge_fleet.history import FleetHistory
from edge_fleet.serve import build_server, parse_http, read_token
from edge_fleet.state import FleetState
from tests.support.pki import write_pki

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def server_for(tmp_path):
    made = []

    def make(**kwargs):
        history = FleetHistory(tmp_path / f"history-{len(made)}.sqlite")
        server = build_server(FleetState(), history, "127.0.0.1", 0, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append((server, history))
        return server

    yield make
    for server, history in made:
        server.shutdown()
        server.server_close()
        history.close()


def fetch(url: str, headers: dict | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_the_default_address_is_loopback():
    assert parse_http(None) == ("127.0.0.1", 8080)
    assert parse_http(":9000") == ("127.0.0.1", 9000)
    assert parse_http("0.0.0.0:9000") == ("0.0.0.0", 9000)


def test_a_token_is_required_by_every_route_but_healthz(server_for):
    server = server_for(token=TOKEN)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for path in ("/", "/api/fleet", "/metrics", "/api/devices/x"):
        assert fetch(base + path)[0] == 401, path
        assert fetch(base + path, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401, path
    assert fetch(base + "/healthz")[0] == 200
    assert fetch(base + "/api/fleet", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, headers = fetch(base + f"/?token={TOKEN}")
    assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert fetch(base + "/api/fleet", {"Cookie": cookie})[0] == 200


def test_https_with_a_certificate(server_for, tmp_path):
    from edge_fleet.serve import tls_context

    write_pki(tmp_path)
    server = server_for(tls=tls_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key")))
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    assert fetch(f"https://127.0.0.1:{server.server_address[1]}/api/fleet", context=client)[0] == 200


def test_a_short_token_file_is_refused(tmp_path):
    short = tmp_path / "token"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(str(short))
