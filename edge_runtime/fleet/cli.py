"""`edge-fleet`: watch every device and roll bundles out over MQTT."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-fleet", description="Watch the fleet over MQTT and roll model bundles out to devices."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in [
        ("watch", "live terminal table of the fleet (not yet available)"),
        ("serve", "web dashboard and Prometheus metrics (not yet available)"),
        ("deploy", "roll a bundle out to devices (not yet available)"),
        ("simulate", "simulated devices for load and demos (not yet available)"),
    ]:
        sub.add_parser(name, help=text)
    args = parser.parse_args(argv)
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":
    raise SystemExit(main())
