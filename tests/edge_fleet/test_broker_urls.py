"""One broker URL parser: the daemon's config and every edge-fleet command (the CLI check, deploy, the monitor,
the simulator) accept and refuse the same URLs, and a refusal is one line that says why. (`edge-fleet deploy
--broker host:1883` used to pass the CLI's check and then be refused by the deploy command.)"""

from __future__ import annotations

import pytest
import yaml

from edge_fleet import cli
from edge_fleet.deploy import DeployError, FleetConnection
from edge_fleet.monitor import FleetMonitor
from edge_fleet.simulate import Simulator
from edge_fleet.state import FleetState
from edge_runtime.config import load_config
from edge_runtime.contract import parse_broker_url
from edge_runtime.yaml_source import ConfigError

ACCEPTED = {
    "mqtt://127.0.0.1:1883": ("127.0.0.1", 1883, False),
    "mqtts://broker.example:8884": ("broker.example", 8884, True),
    "mqtts://fleet@broker.example": ("broker.example", 8883, True),
    "broker.example:1884": ("broker.example", 1884, False),
    "localhost": ("localhost", 1883, False),
    "mqtt://[::1]:1883": ("::1", 1883, False),
}
REFUSED = {
    "http://example.org": "the scheme must be mqtt:// or mqtts://",
    "tcp://broker:1883": "the scheme must be mqtt:// or mqtts://",
    "mqtt://user:hunter2@broker:1883": "no credentials inside the url",
    "mqtt://:1883": "names no host",
    "mqtt://broker:99999": "the port must be a number from 1 to 65535",
    "mqtt://broker:0": "the port must be a number from 1 to 65535",
    "broker:x": "the port must be a number from 1 to 65535",
}


def daemon_verdict(tmp_path, url: str) -> str | None:
    """None if the daemon's config loader accepts `url`, else the one line of its error about the broker."""
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump({"device_id": "pi-01", "broker": url,
                                    "models": [{"bundle": "a.bundle", "source": {"type": "mqtt", "topic": "t"}}]}))
    try:
        config = load_config(path)
    except ConfigError as exc:
        lines = [line for line in exc.problems if "broker" in line]
        assert len(lines) == 1, exc.problems
        return lines[0]
    address = config.broker.address
    assert (address.host, address.port, config.broker.uses_tls) == ACCEPTED[url]
    return None


def cli_verdict(monkeypatch, capsys, command: list[str], url: str) -> str | None:
    """None if `edge-fleet COMMAND --broker url` gets past the argument check, else its one error line."""
    monkeypatch.setattr(cli, "_entry", lambda name: lambda args: 0)
    try:
        assert cli.main([*command, "--broker", url]) == 0
    except SystemExit as exc:
        assert exc.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-fleet: error:")]
        assert len(errors) == 1
        return errors[0]
    return None


def fleet_verdicts(url: str) -> list[str | None]:
    """What deploy's connection, the monitor and the simulator say about `url` (None: accepted)."""
    verdicts: list[str | None] = []
    try:
        connection = FleetConnection(url)
        assert (connection.broker.host, connection.broker.port, connection.broker.tls) == ACCEPTED[url]
        verdicts.append(None)
    except DeployError as exc:
        verdicts.append(str(exc))
    for make in (lambda: FleetMonitor(url, FleetState()), lambda: Simulator(url, 1)):
        try:
            made = make()
        except ValueError as exc:
            verdicts.append(str(exc))
            continue
        assert (made.host, made.port, made.tls) == ACCEPTED[url]
        (made.stop if isinstance(made, FleetMonitor) else made.loop.stop)()  # closes the loop's selector
        verdicts.append(None)
    return verdicts


@pytest.mark.parametrize("url", list(ACCEPTED))
def test_every_side_accepts_the_same_urls(tmp_path, monkeypatch, capsys, url):
    assert daemon_verdict(tmp_path, url) is None
    for command in (["watch"], ["serve"], ["deploy", "x.bundle", "--group", "g"], ["simulate", "--devices", "1"]):
        assert cli_verdict(monkeypatch, capsys, command, url) is None, command
    assert fleet_verdicts(url) == [None, None, None]


@pytest.mark.parametrize("url", list(REFUSED))
def test_every_side_refuses_the_same_urls_with_one_line_that_says_why(tmp_path, monkeypatch, capsys, url):
    reason = REFUSED[url]
    with pytest.raises(ValueError, match=reason) as refused:
        parse_broker_url(url)
    assert "\n" not in str(refused.value)
    assert "hunter2" not in str(refused.value), "the password was repeated in the message"
    messages = [daemon_verdict(tmp_path, url)]
    messages += [cli_verdict(monkeypatch, capsys, command, url) for command in
                 (["watch"], ["serve"], ["deploy", "x.bundle", "--group", "g"], ["simulate", "--devices", "1"])]
    messages += fleet_verdicts(url)
    for message in messages:
        assert message is not None and reason in message and "\n" not in message, message
    for message in messages[1:]:  # (the daemon's config errors quote the value of the key, from yaml_source)
        assert "hunter2" not in message
