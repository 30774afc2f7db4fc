"""`edge-fleet`: watch every device and roll bundles out over MQTT.

Each command lives in its own module, imported only when it runs: `watch` needs rich, `serve` its web and
Prometheus pieces, and a missing piece should fail that one command with a clear message, not the whole tool.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from edge_runtime.contract import parse_broker_url

DEFAULT_BROKER = os.environ.get("EDGE_FLEET_BROKER", "mqtt://127.0.0.1:1883")


def _broker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=DEFAULT_BROKER,
                        help="mqtt://host:port or mqtts://user@host:port (default: $EDGE_FLEET_BROKER or "
                             "%(default)s); the password may come from $EDGE_FLEET_MQTT_PASSWORD")
    parser.add_argument("--prefix", default="edge", help="topic prefix of the fleet (default: %(default)s)")


def _watch_options(parser: argparse.ArgumentParser) -> None:
    _broker(parser)
    parser.add_argument("--filter", default=None, metavar="TEXT", help="only devices whose id, group or model "
                                                                       "contains TEXT")
    parser.add_argument("--group", default=None, help="only devices of this group")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--wait", type=float, default=2.0, metavar="S",
                        help="with --once: seconds of messages to collect before printing (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="exit after S seconds")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N rows (default: what fits the terminal; all with --once)")
    parser.add_argument("--stale-after", type=float, default=None, metavar="S",
                        help="show an online device that sent nothing for S seconds as offline")
    parser.add_argument("--ca-file", default=None, metavar="PEM",
                        help="CA of an mqtts:// broker with a private CA (default: $EDGE_FLEET_CA_FILE, else the "
                             "system's CAs)")


def _serve_options(parser: argparse.ArgumentParser) -> None:
    _broker(parser)
    parser.add_argument("--http", default="127.0.0.1:8080", metavar="[HOST]:PORT", type=_http_address,
                        help="where the dashboard and /metrics listen (default: %(default)s; every interface: "
                             "0.0.0.0:PORT, with a token)")
    parser.add_argument("--token-file", default=None, metavar="FILE",
                        help="require this token (Authorization: Bearer, or /?token= once in a browser); default: "
                             "$EDGE_FLEET_TOKEN, else none")
    parser.add_argument("--tls-cert", default=None, metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key")
    parser.add_argument("--history", default="./fleet-history.sqlite", metavar="PATH",
                        help="SQLite file of the fleet's history (default: %(default)s)")
    parser.add_argument("--retention-days", type=float, default=7.0, metavar="DAYS",
                        help="history older than this is deleted (default: %(default)s)")
    parser.add_argument("--share-group", default=None, metavar="NAME",
                        help="MQTT v5 shared-subscription group: serve processes with the same NAME split the "
                             "high-rate topics between them")


def _http_address(text: str) -> str:
    """`host:port` or `:port`, kept as text (serve parses it); checked here so a typo fails before anything
    starts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT or :PORT")
    return text


def _deploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle file from edge-convert")
    _broker(parser)
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("--device", nargs="+", action="extend", metavar="ID", help="target devices (repeatable)")
    targets.add_argument("--group", default=None, metavar="NAME", help="every device whose status names this group")
    parser.add_argument("--canary", type=int, default=0, metavar="N",
                        help="send to N devices first; the rest only if all N install it")
    parser.add_argument("--signing-key", default=None, metavar="KEY.pub",
                        help="refuse the bundle unless it is signed by this key")
    parser.add_argument("--model", default=None, metavar="NAME", help="the model on the device to replace")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds to wait for the devices (default: %(default)s)")
    parser.add_argument("--control-key", default=None, metavar="KEY.key",
                        help="PRIVATE control key that signs the requests (default: $EDGE_FLEET_CONTROL_KEY); the "
                             "devices list its .pub in security.control_keys")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="let the devices install a bundle older than the one they run")
    parser.add_argument("--expires", type=float, default=7 * 24 * 3600.0, metavar="S",
                        help="seconds the signed requests stay valid (default: 7 days)")


def _command_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="the device id")
    parser.add_argument("name", metavar="NAME", help="the command: reload, info")
    _broker(parser)
    parser.add_argument("--control-key", default=None, metavar="KEY.key",
                        help="PRIVATE control key that signs the command (default: $EDGE_FLEET_CONTROL_KEY)")
    parser.add_argument("--model", default=None, help="which of the device's models (reload)")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="reload: accept a configured bundle older than the one the device ran")
    parser.add_argument("--arg", action="append", metavar="KEY=VALUE", help="another argument (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the answer (default: %(default)s)")
    parser.add_argument("--expires", type=float, default=300.0, metavar="S",
                        help="seconds the signed command stays valid (default: %(default)s)")


def _simulate_options(parser: argparse.ArgumentParser) -> None:
    from edge_fleet.simulate import add_arguments

    add_arguments(parser)


# command -> (help, options, module, function)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str, str]] = {
    "watch": ("live terminal table of the fleet", _watch_options, "edge_fleet.watch", "main_watch"),
    "serve": ("web dashboard, alerts and Prometheus metrics", _serve_options, "edge_fleet.serve",
              "main_serve"),
    "deploy": ("roll a bundle out to devices", _deploy_options, "edge_fleet.deploy", "main_deploy"),
    "command": ("send a signed command to a device", _command_options, "edge_fleet.command", "main_command"),
    "simulate": ("simulated devices for load tests and demos", _simulate_options, "edge_fleet.simulate",
                 "main_simulate"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-fleet", description="Watch the fleet over MQTT and roll model bundles out to devices.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (text, options, _, _) in COMMANDS.items():
        options(sub.add_parser(name, help=text, description=text))
    return parser


def _entry(command: str) -> Callable[[argparse.Namespace], int | None]:
    """The command's function, or SystemExit(2) with what is missing."""
    module_name, function = COMMANDS[command][2], COMMANDS[command][3]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"edge-fleet {command}: not available in this installation ({module_name} is missing)",
                  file=sys.stderr)
        else:
            print(f"edge-fleet {command}: needs the Python package {exc.name!r}, which is not installed "
                  f"(pip install {exc.name.split('.')[0].replace('_', '-')})", file=sys.stderr)
        raise SystemExit(2) from None
    entry = getattr(module, function, None)
    if entry is None:
        print(f"edge-fleet {command}: {module_name} has no {function}()", file=sys.stderr)
        raise SystemExit(2)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        parse_broker_url(args.broker)
    except ValueError as exc:
        parser.error(str(exc))
    entry = _entry(args.command)
    try:
        result = entry(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
