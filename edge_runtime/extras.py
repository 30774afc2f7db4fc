"""What each optional part of the install needs, and the one line that says how to get it.

The device install is small on purpose (numpy, paho-mqtt, pydantic, PyYAML, cryptography): `edge-convert` and
`edge-fleet` ship in the same wheel but need their extras. Their entry points ask here first, so a device install
answers `pip install 'edge-runtime[converter]'` instead of a `ModuleNotFoundError` traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

#: extra -> the import names it provides (what the tool imports), checked without importing them
EXTRAS: dict[str, tuple[str, ...]] = {
    "converter": ("onnx", "onnxruntime", "onnxslim", "rich"),
    "fleet": ("rich", "prometheus_client"),
    "onnx": ("onnxruntime",),
}


def missing_modules(extra: str) -> list[str]:
    """The import names of `extra` that are not installed here (empty when the extra is complete)."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def missing_extra_message(tool: str, extra: str) -> str | None:
    """One line naming the extra to install when part of it is missing, else None."""
    missing = missing_modules(extra)
    if not missing:
        return None
    return (f"{tool}: this installation lacks the {extra} extra ({', '.join(missing)} not installed): "
            f"pip install 'edge-runtime[{extra}]'")


def run_tool(tool: str, extra: str, cli: str, argv: list[str] | None = None) -> int:
    """A console script's body: one line naming the missing extra (exit 2), else `cli`'s `main(argv)`, imported
    only now (`cli` is a module path such as "converter.cli")."""
    message = missing_extra_message(tool, extra)
    if message:
        print(message, file=sys.stderr)
        return 2
    return importlib.import_module(cli).main(argv)
