"""The `edge-convert` command: names the missing extra in one line on a device install, then runs the CLI.

Kept apart from `converter.cli`, which imports rich and the converter's passes at module level: a console script
that imports those first would die with a traceback on a board that installed only the device runtime.
"""

from __future__ import annotations

from edge_runtime.extras import run_tool


def main(argv: list[str] | None = None) -> int:
    return run_tool("edge-convert", "converter", "converter.cli", argv)


if __name__ == "__main__":
    raise SystemExit(main())
