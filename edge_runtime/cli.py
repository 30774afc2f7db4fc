"""`edge-runtime`: the on-device daemon (run, check, bench)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run model bundles on this board and publish predictions, drift and health over MQTT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the daemon (not yet available)").add_argument("config")
    sub.add_parser("check", help="validate a config, its bundles and backends (not yet available)").add_argument(
        "config"
    )
    sub.add_parser("bench", help="latency and throughput of a bundle (not yet available)").add_argument("bundle")
    args = parser.parse_args(argv)
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":
    raise SystemExit(main())
