"""The `edge-fleet` command: names the missing extra in one line on a device install, then runs the CLI.

The fleet commands need the fleet extra (rich for `watch`, prometheus-client for `serve`); a board that installed
only the device runtime gets one line saying what to install instead of a traceback.
"""

from __future__ import annotations

import sys

from edge_runtime.extras import missing_extra_message


def main(argv: list[str] | None = None) -> int:
    message = missing_extra_message("edge-fleet", "fleet")
    if message:
        print(message, file=sys.stderr)
        return 2
    from edge_fleet.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
