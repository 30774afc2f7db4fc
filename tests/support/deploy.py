"""Deployment test helpers: signed (and spoiled) bundles, device configs, and raw publishing past the fleet
tool's local checks, so a device's own refusal can be tested.

Every device made here trusts `CONTROL` (a control key made once per test process) for its commands and deploy
requests, `request_message` signs with it, and `use_control_key` (a fixture for the deploy test modules) hands it
to `edge-fleet deploy` through $EDGE_FLEET_CONTROL_KEY."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from converter.cli import main as convert
from edge_fleet.deploy import BundleBlob, chunk_topic, make_request
from tests.support.control import ControlKey
from tests.support.daemon import messages, write_config

CONTROL = ControlKey(Path(tempfile.mkdtemp(prefix="edge-control-")))


@pytest.fixture(autouse=False)
def use_control_key(monkeypatch):
    """`edge-fleet deploy` signs with CONTROL (the key every device of these helpers trusts)."""
    monkeypatch.setenv("EDGE_FLEET_CONTROL_KEY", str(CONTROL.private))


def build_release(sample, folder: Path) -> Path:
    """`release.pub`/`.key` and `intruder.*` keys; `fp32.bundle` signed by release, `untrusted.bundle` signed by
    intruder, `tampered.bundle` (fp32 with model.onnx changed after signing)."""
    for name in ("release", "intruder"):
        assert convert(["keygen", name, "--dir", str(folder)]) == 0
    common = [str(sample.onnx_path), "--target", "x86_64", "--card", str(sample.card_path), "--calibration",
              str(sample.calibration_path), "--eval", str(sample.eval_path), "--no-latency", "--quantize", "none"]
    for name, key in (("fp32", "release"), ("untrusted", "intruder")):
        assert convert([*common, "-o", str(folder / f"{name}.bundle"), "--sign-key", str(folder / f"{key}.key")]) == 0
    with zipfile.ZipFile(folder / "fp32.bundle") as original, zipfile.ZipFile(folder / "tampered.bundle", "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, data[:-1] + b"\x01" if info.filename == "model.onnx" else data)
    return folder


def device_config(tmp_path: Path, device: str, broker_url: str, bundle: Path, recording: Path,
                  trusted_key: Path | None, group: str | None = None, deploy: dict | None = None) -> Path:
    """A device in its own folder, running its own copy of `bundle` (a deployment replaces that file)."""
    folder = tmp_path / device
    folder.mkdir()
    if trusted_key is not None:  # a device with trusted keys runs only signed bundles: sign a copy with that key,
        from tests.support.control import resign  # as an older release than any the test deploys (no rollback)

        resign(bundle, folder / "activity.bundle", trusted_key.with_suffix(".key"), created="2020-01-01T00:00:00Z")
    else:
        shutil.copyfile(bundle, folder / "activity.bundle")
    extra: dict = {"group": group, "security": {"control_keys": [str(CONTROL.public)]}}
    if trusted_key is not None:
        extra["security"] |= {"trusted_keys": [str(trusted_key)], "require_signature": False}
    if deploy is not None:
        extra["deploy"] = deploy
    return write_config(folder / "daemon.yaml", broker_url=broker_url, bundle=folder / "activity.bundle",
                        device_id=device, source={"type": "replay", "path": str(recording), "speed": 20, "loop": True},
                        extra=extra)


def blob(path: Path) -> BundleBlob:
    """A bundle file as the fleet tool would send it, without its local checks."""
    import hashlib

    data = path.read_bytes()
    return BundleBlob(data, hashlib.sha256(data).hexdigest(), "activity", "test")


def request_for(bundle: BundleBlob, deployment_id: str, chunk_size: int, model: str | None = None) -> dict:
    return make_request(bundle, deployment_id, "edge", chunk_size, model)


def chunk_messages(bundle: BundleBlob, chunk_size: int, indexes: range | None = None) -> list[tuple[str, bytes]]:
    data = bundle.data
    chunks = [data[start:start + chunk_size] for start in range(0, len(data), chunk_size)]
    topic = chunk_topic("edge", bundle.sha256)
    return [(f"{topic}/{index}", chunks[index]) for index in (indexes or range(len(chunks)))]


def publish(port: int, items: list[tuple[str, bytes]], retain: bool = True) -> None:
    """Publish (QoS 1) and wait until the broker has every message."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def request_message(device: str, request: dict | bytes) -> tuple[str, bytes]:
    """The request signed by CONTROL for `device` (raw bytes are sent as they are)."""
    payload = request if isinstance(request, bytes) else CONTROL.deploy(request, device=device)
    return f"edge/{device}/deploy/request", payload


def last_status(collector, device: str) -> dict | None:
    """The newest `status` document of `device` (the collector subscribes to edge/+/status or wider)."""
    found = [m for m in messages(collector, f"/{device}/status") if m.get("device_id") == device]
    return found[-1] if found else None


def deploy_states(collector, device: str, deployment_id: str) -> list[dict]:
    return [m for m in messages(collector, f"/{device}/deploy/status") if m.get("deployment_id") == deployment_id]
