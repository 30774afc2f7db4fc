"""Parser escapes of issue 13: deeply nested JSON and a 309-digit `ts` are rejections with a reason, never an
exception out of the decoder; on a serial port one such line is one rejection, and the good lines around it (in
the same read) are delivered without the port being closed. YAML aliases and hostile .npz headers are refused."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile

import numpy as np
import pytest

from edge_runtime.decode import decode_json
from edge_runtime.npz import NpzError, check_npz, load_npz
from edge_runtime.stream import InputRejected
from edge_runtime.yaml_source import ConfigError, read_yaml
from tests.support.bombs import npz_declaring


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
    (b'{"values": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed_json"),
    (b'{"ts": 1' + b"0" * 309 + b', "values": [1, 2]}', "bad_schema"),
    (b'{"ts": -1' + b"0" * 400 + b', "values": [1, 2]}', "bad_schema"),
    (b'{"ts": 1e999, "values": [1, 2]}', "bad_schema"),
    (b'{"values": [1' + b"0" * 400 + b', 2]}', "non_finite"),
    (b'{"values": [1, 2], "extra": ' + b"[" * 3000 + b"]" * 3000 + b"}", "malformed_json"),
])
def test_hostile_json_is_a_rejection(payload, reason):
    with pytest.raises(InputRejected) as caught:
        decode_json(payload, channels=2, rate_hz=10.0, max_bytes=10_000_000)
    assert caught.value.reason == reason


class Sink:
    def __init__(self):
        self.accepted, self.rejected = [], []
        self.lock = threading.Lock()

    def accept(self, block) -> None:
        with self.lock:
            self.accepted.append(block)

    def reject(self, rejected, source=None) -> None:
        with self.lock:
            self.rejected.append(rejected.reason)


def test_a_hostile_line_on_a_serial_port_costs_one_rejection_not_the_port(tmp_path, caplog):
    """A real pty: good lines, a 100,000-deep line, a 309-digit ts, good lines, all in one write."""
    pytest.importorskip("serial")
    from edge_runtime.card import ModelCard
    from edge_runtime.sources.base import SourceContext
    from edge_runtime.sources.serial import SerialSource, SerialSourceConfig

    controller, device = os.openpty()
    card = ModelCard.model_validate({"name": "m", "labels": ["a", "b"], "input": {
        "window": 4, "hop": 1, "rate_hz": 10, "channels": 2, "layout": "channels_last"},
        "output": {"kind": "classification"}})
    sink = Sink()
    source = SerialSource(SerialSourceConfig(type="serial", port=os.ttyname(device), format="json"),
                          SourceContext(card=card, sink=sink, subscriber=None, max_message_bytes=1_000_000))
    source.start()
    try:
        deadline = time.monotonic() + 10
        while source._port is None and time.monotonic() < deadline:  # opening a tty flushes what waits in it
            time.sleep(0.02)
        good = [b'{"ts": %d, "values": [1, 2]}' % index for index in range(6)]
        lines = [*good[:3], b"[" * 100_000, b'{"ts": 1' + b"0" * 309 + b', "values": [1, 2]}', *good[3:]]
        os.write(controller, b"\n".join(lines) + b"\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(sink.accepted) + len(sink.rejected) < 8:
            time.sleep(0.05)
        assert len(sink.accepted) == 6, (len(sink.accepted), sink.rejected)
        assert sorted(sink.rejected) == ["bad_schema", "malformed_json"]
        assert "went away" not in caplog.text and "unexpected error" not in caplog.text
    finally:
        source.stop()
        os.close(controller)
        os.close(device)


def test_yaml_aliases_are_refused(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    path = tmp_path / "config.yaml"
    path.write_text(laughs)
    assert len(path.read_bytes()) < 400
    with pytest.raises(ConfigError, match=r"config.yaml:2\] YAML aliases \(\*a\) are not allowed"):
        read_yaml(path)


def test_deep_yaml_and_non_utf8_are_config_errors(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        read_yaml(deep)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a UTF-8"):
        read_yaml(binary)


@pytest.mark.parametrize("shape", [(1 << 38,), (300_000_000,), (1 << 62, 1 << 62)])
def test_an_npz_declaring_a_huge_array_is_refused_before_allocation(shape):
    with pytest.raises(NpzError, match="declares"):
        load_npz(npz_declaring(shape), max_bytes=1 << 40)


def test_npz_limits_and_pickles():
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros(1000, dtype=np.float32))
    assert load_npz(buffer.getvalue(), max_bytes=4200)["x"].shape == (1000,)
    with pytest.raises(NpzError, match="limit"):
        check_npz(buffer.getvalue(), max_bytes=3999)
    objects = io.BytesIO()
    np.savez(objects, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NpzError, match="pickle"):
        check_npz(objects.getvalue(), max_bytes=10_000)
    with pytest.raises(NpzError):
        check_npz(b"not a zip", max_bytes=10)
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00\xff\xff{garbage")
    with pytest.raises(NpzError, match="header"):
        check_npz(broken.getvalue(), max_bytes=10_000)
