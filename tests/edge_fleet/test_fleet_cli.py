"""`edge-fleet` argument parsing and the message when a command's module is missing."""

from __future__ import annotations

import importlib

import pytest

from edge_fleet import cli


def test_serve_options():
    args = cli.build_parser().parse_args(["serve", "--broker", "mqtt://b:1883", "--http", ":9000",
                                          "--share-group", "dash"])
    assert (args.broker, args.http, args.history, args.retention_days, args.share_group, args.prefix) == (
        "mqtt://b:1883", ":9000", "./fleet-history.sqlite", 7.0, "dash", "edge")


def test_deploy_options_take_devices_or_a_group():
    args = cli.build_parser().parse_args(["deploy", "m.bundle", "--device", "a", "b", "--device", "c",
                                          "--canary", "1", "--signing-key", "k.pub", "--model", "m", "--timeout", "9"])
    assert (args.bundle, args.device, args.group, args.canary, args.signing_key, args.model, args.timeout) == (
        "m.bundle", ["a", "b", "c"], None, 1, "k.pub", "m", 9.0)
    assert cli.build_parser().parse_args(["deploy", "m.bundle", "--group", "lab"]).group == "lab"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["deploy", "m.bundle"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["deploy", "m.bundle", "--group", "lab", "--device", "a"])


def test_bad_http_address_and_broker_url_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--http", "8080"])
    with pytest.raises(SystemExit):
        cli.main(["watch", "--broker", "http://example.org", "--once"])
    assert "mqtt://" in capsys.readouterr().err


def test_a_missing_command_module_is_a_clear_error(monkeypatch, capsys):
    real = importlib.import_module

    def without_serve(name, *args):
        if name == "edge_fleet.serve":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name == "edge_fleet.deploy":
            raise ModuleNotFoundError("No module named 'prometheus_client'", name="prometheus_client")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_serve)
    with pytest.raises(SystemExit) as exit_serve:
        cli.main(["serve", "--broker", "mqtt://127.0.0.1:1"])
    assert exit_serve.value.code == 2
    assert "not available in this installation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["deploy", "x.bundle", "--group", "g"])
    assert "pip install prometheus-client" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "simulate" in capsys.readouterr().out
