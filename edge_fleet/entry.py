"""The `edge-fleet` command: names the missing extra in one line on a device install, then runs the CLI.

The fleet commands need the fleet extra (rich for `watch`, prometheus-client for `serve`); a board that installed
only the device runtime gets one line saying what to install instead of a traceback.
"""

from __future__ import annotations

from edge_runtime.extras import run_tool


def main(argv: list[str] | None = None) -> int:
    return run_tool("edge-fleet", "fleet", "edge_fleet.cli", argv)


if __name__ == "__main__":
    raise SystemExit(main())
