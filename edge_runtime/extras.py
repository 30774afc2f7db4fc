"""What each optional part of the install needs, and the one line that says how to get it.

The device install is small on purpose (numpy, paho-mqtt, pydantic, PyYAML, cryptography): `edge-convert` and
`edge-fleet` ship in the same wheel but need their extras. Their entry points ask here first, so a device install
answers `pip install 'edge-runtime[converter]'` instead of a `ModuleNotFoundError` traceback.
"""

from __future__ import annotations

import importlib.util

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
