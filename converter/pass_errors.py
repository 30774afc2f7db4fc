"""A failure inside a pass becomes one line naming the pass and, where the library said, the node.

The passes call libraries that fail in their own words (onnx's checker and shape inference, onnxslim,
onnxruntime's session and quantizer): a traceback from deep inside one tells the user nothing they can act on.
`pass_failures` wraps every pass in one place (converter/pipeline.py) and turns any exception that is not already
a ConversionError into a PassFailed with the library's first line and the node it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from converter.errors import ConversionError

#: How the libraries name the node that failed, most specific first.
_NODE_PATTERNS = (
    re.compile(r"node\.\s*Name:\s*'([^']+)'"),  # onnxruntime at run time: "... Conv node. Name:'Conv_3' ..."
    re.compile(r"Node\s*\(([^)]+)\)"),  # onnxruntime at load time: "Node (Conv_3) Op (Conv) [ShapeInferenceError]"
    re.compile(r"node name:\s*([^)\s]+)\)"),  # onnx shape inference: "(op_type:Conv, node name: conv1)"
    re.compile(r"In Node, \(\"([^\"]+)\""),  # onnx checker: 'In Node, ("w_DequantizeLinear", DequantizeLinear, ...'
    re.compile(r"[Nn]ode '([^']+)'"),
)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_MAX_MESSAGE = 300


class PassFailed(ConversionError):
    """A library failed inside a pass; `step` and `node` say where, for the report and the message."""

    def __init__(self, step: str, reason: str, node: str | None):
        where = f"pass '{step}' failed" + (f" at node '{node}'" if node else "")
        super().__init__(f"{where}: {reason}")
        self.step = step
        self.reason = reason
        self.node = node


def failed_node(text: str) -> str | None:
    """The node a library's error text names, if it names one."""
    for pattern in _NODE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).strip()
    return None


def first_line(exc: BaseException) -> str:
    """The library's message without its prefixes, on one line, short enough to read."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _ORT_PREFIX.sub("", text)
    if len(text) > _MAX_MESSAGE:  # libraries put the cause last: keep both ends
        half = _MAX_MESSAGE // 2
        text = text[:half] + " ... " + text[-half:]
    if type(exc).__module__.startswith("onnxruntime"):  # its text already says what it is
        return text
    return f"{type(exc).__name__}: {text}"


@contextmanager
def pass_failures(step: str) -> Iterator[None]:
    """Run a pass's body; anything but a ConversionError leaves as a PassFailed naming the pass and node."""
    try:
        yield
    except ConversionError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the point: no library exception reaches the user as a traceback
        raise PassFailed(step, first_line(exc), failed_node(str(exc))) from exc
