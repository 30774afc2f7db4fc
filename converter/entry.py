"""The `edge-convert` command: names the missing extra in one line on a device install, then runs the CLI.

Kept apart from `converter.cli`, which imports rich and the converter's passes at module level: a console script
that imports those first would die with a traceback on a board that installed only the device runtime.
"""

from __future__ import annotations

import sys

from edge_runtime.extras import missing_extra_message


def main(argv: list[str] | None = None) -> int:
    message = missing_extra_message("edge-convert", "converter")
    if message:
        print(message, file=sys.stderr)
        return 2
    from converter.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
