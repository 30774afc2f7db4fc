"""`reload` (signed by a control key) swaps in the configured bundle again only after it loaded, its signature
verified and its golden output reproduced, without dropping the stream; a tampered or untrusted bundle is refused
and the running model stays."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from converter.cli import main as convert
from tests.support.broker import Collector
from tests.support.control import ControlKey
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

DEVICE = "dev-1"


@pytest.fixture(scope="module")
def signed(activity_sample, tmp_path_factory):
    """Two signed bundles of the activity model (int8 and fp32) and a bundle signed by an untrusted key."""
    folder = tmp_path_factory.mktemp("signed")
    for name in ("release", "intruder"):
        assert convert(["keygen", name, "--dir", str(folder)]) == 0
    common = [str(activity_sample.onnx_path), "--target", "x86_64", "--card", str(activity_sample.card_path),
              "--calibration", str(activity_sample.calibration_path), "--eval", str(activity_sample.eval_path),
              "--no-latency"]
    bundles = {
        "int8": ["--sign-key", str(folder / "release.key")],
        "fp32": ["--quantize", "none", "--sign-key", str(folder / "release.key")],
        "untrusted": ["--quantize", "none", "--sign-key", str(folder / "intruder.key")],
    }
    for name, extra in bundles.items():
        assert convert([*common, "-o", str(folder / f"{name}.bundle"), *extra]) == 0
    tampered = folder / "tampered.bundle"
    with zipfile.ZipFile(folder / "fp32.bundle") as original, zipfile.ZipFile(tampered, "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, data[:-1] + b"\x01" if info.filename == "model.onnx" else data)
    return folder


def send(port: int, topic: str, payload: bytes) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_reload_good_then_refuse_tampered_and_untrusted(tmp_path, broker, signed, activity_recording):
    """`reload` loads the configured path again (a file replaced on the device by its operator), signed by the
    control key; a tampered or untrusted file there is refused and the running model stays."""
    key = ControlKey(tmp_path / "keys")
    configured = tmp_path / "activity.bundle"
    shutil.copyfile(signed / "int8.bundle", configured)
    config = write_config(
        tmp_path / "daemon.yaml", broker_url=broker.url, bundle=configured,
        source={"type": "replay", "path": str(activity_recording), "speed": 20, "loop": True},
        extra={"security": {"trusted_keys": [str(signed / "release.pub")], "require_signature": True,
                            "control_keys": [str(key.public)]}},
    )
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: len(messages(everything, "/predictions/activity")) >= 5, 30), daemon.output()
            online = [m for m in messages(everything, "/status") if m["state"] == "online"][-1]
            assert online["models"][0]["precision"] == "int8"
            assert online["models"][0]["signature"].startswith("verified")
            command = f"edge/{DEVICE}/cmd/reload"

            shutil.copyfile(signed / "fp32.bundle", configured)
            send(broker.port, command, key.command("reload", {"request_id": 1}))
            assert wait_until(lambda: len(messages(everything, "/cmd/reload/result")) >= 1, 20), daemon.output()
            result = messages(everything, "/cmd/reload/result")[0]
            assert result["ok"] is True and result["precision"] == "fp32", result
            assert wait_until(lambda: [m for m in messages(everything, "/status") if m["state"] == "online"][-1]
                              ["models"][0]["precision"] == "fp32", 10)

            for index, name in enumerate(("tampered", "untrusted"), start=2):
                shutil.copyfile(signed / f"{name}.bundle", configured)
                send(broker.port, command, key.command("reload", {"request_id": index}))
                assert wait_until(lambda i=index: len(messages(everything, "/cmd/reload/result")) >= i, 20)
                refused = messages(everything, "/cmd/reload/result")[index - 1]
                assert refused["ok"] is False and refused["request_id"] == index
            reasons = [r["error"] for r in messages(everything, "/cmd/reload/result")[1:]]
            assert "checksum mismatch" in reasons[0]
            assert "not among the trusted keys" in reasons[1]

            count = len(messages(everything, "/predictions/activity"))
            assert wait_until(lambda: len(messages(everything, "/predictions/activity")) > count + 3, 20)
        finally:
            assert daemon.terminate() == 0, daemon.output()
    predictions = messages(everything, "/predictions/activity")
    seqs = [p["seq"] for p in predictions]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the stream must not drop windows on a reload"
    info = [m for m in messages(everything, "/status") if m["state"] in ("online", "stopped")][-1]
    assert info["models"][0]["precision"] == "fp32"  # the refused bundles did not replace the good one
