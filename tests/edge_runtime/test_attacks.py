"""The attacks of issue 13, tried on the real daemon and a real mosquitto: a client with broker access and no key,
against a daemon that trusts the fleet's bundle key and its control key and otherwise runs with defaults.

Each test first does what the attacker did (plain JSON commands and deploy requests, a planted file, an old
signed bundle, a replayed command, a zip bomb, hostile sensor messages), then checks that the device refused it,
counted it, and kept running what it ran. Before the fix each of these was accepted (see the issue)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from edge_runtime.bundle import read_bundle
from edge_runtime.contract import new_claims
from tests.support.broker import Collector, send_sentinels
from tests.support.control import ControlKey, resign
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.deploy import blob, chunk_messages, publish, request_for
from tests.support.tiers import tier

DEVICE = "dev-1"
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
@tier("slow")
def keys(activity_bundle, tmp_path_factory):
    """The fleet's bundle key (`release`), its control key, and the activity model as release 3 (older) and 4."""
    from edge_runtime.signing import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    generate_keypair("release", folder)
    generate_keypair("intruder", folder)
    control = ControlKey(folder)
    v3 = resign(activity_bundle, folder / "v3.bundle", folder / "release.key", version="3",
                created="2025-01-01T00:00:00Z")
    v4 = resign(activity_bundle, folder / "v4.bundle", folder / "release.key", version="4",
                created="2025-06-01T00:00:00Z")
    unsigned = resign(activity_bundle, folder / "unsigned.bundle", None, version="5",
                      created="2025-07-01T00:00:00Z")
    intruder = ControlKey(folder, "intruder-control")
    return type("Keys", (), {"folder": folder, "control": control, "intruder": intruder, "v3": v3, "v4": v4,
                             "unsigned": unsigned, "release_pub": folder / "release.pub"})


def start_device(tmp_path: Path, broker, keys, bundle: Path, source: dict | None = None) -> tuple[Path, Path]:
    """A device folder with its own copy of `bundle`; the config trusts release.pub for bundles and the control
    key for commands, and says nothing else about security (require_signature keeps its default, false)."""
    folder = tmp_path / DEVICE
    folder.mkdir(exist_ok=True)
    configured = folder / "activity.bundle"
    configured.write_bytes(bundle.read_bytes())
    config = write_config(
        folder / "daemon.yaml", broker_url=broker.url, bundle=configured, device_id=DEVICE,
        source=source or {"type": "replay", "path": str(keys.recording), "speed": 20, "loop": True},
        extra={"security": {"trusted_keys": [str(keys.release_pub)], "control_keys": [str(keys.control.public)]}})
    return config, configured


def running_version(collector) -> str | None:
    online = [m for m in messages(collector, "/status") if m.get("state") == "online" and m.get("models")]
    return online[-1]["models"][0]["version"] if online else None


def onlines(collector) -> list[dict]:
    return [m for m in messages(collector, "/status") if m.get("state") == "online"]


def last_stats(collector) -> dict:
    found = messages(collector, f"/{DEVICE}/stats")
    return found[-1] if found else {}


@pytest.fixture
def device(tmp_path, broker, keys, activity_recording):
    keys.recording = activity_recording
    config, configured = start_device(tmp_path, broker, keys, keys.v4)
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: running_version(everything) == "4", 60), daemon.output()
            yield type("Device", (), {"daemon": daemon, "config": config, "bundle": configured,
                                      "messages": everything, "folder": config.parent})
        finally:
            daemon.close() if daemon.process.poll() is not None else daemon.terminate()


def test_an_unsigned_deploy_and_a_reload_of_the_planted_file_are_refused(device, broker, keys):
    """The issue's first attack: a deploy request declaring two chunks with one sent leaves the attacker's file
    on the device; `cmd/reload {"bundle": that path}` then loaded it. Now neither request is accepted, nothing
    is stored, and the running model stays."""
    attacker = blob(keys.unsigned)
    request = request_for(attacker, "evil-1", CHUNK)
    publish(broker.port, [(f"edge/{DEVICE}/deploy/request", json.dumps(request).encode()),
                          *chunk_messages(attacker, CHUNK, range(1))])
    planted = device.folder / "deploy" / "planted.bundle"
    planted.write_bytes(keys.unsigned.read_bytes())  # as if a transfer had left it there
    plain = json.dumps({"bundle": str(planted), "request_id": 1}).encode()
    publish(broker.port, [(f"edge/{DEVICE}/cmd/reload", plain)], retain=False)
    # the same reload, signed by a key the device does not trust for control, and a signed one naming the path
    publish(broker.port, [
        (f"edge/{DEVICE}/cmd/reload", keys.intruder.command("reload", {"bundle": str(planted), "request_id": 2})),
        (f"edge/{DEVICE}/cmd/reload", keys.control.command("reload", {"bundle": str(planted), "request_id": 3})),
    ], retain=False)
    results = lambda: messages(device.messages, "/cmd/reload/result")  # noqa: E731
    assert wait_until(lambda: len(results()) >= 3, 20), device.daemon.output()
    by_id = {r.get("request_id"): r for r in results()}
    unsigned = next(r for r in results() if r.get("refused") == "unsigned")
    assert unsigned["ok"] is False
    assert any(r.get("refused") == "untrusted_key" for r in results())
    assert by_id[3]["ok"] is False and "only the configured bundle" in by_id[3]["error"]
    refused = [m for m in messages(device.messages, "/deploy/status") if m.get("state") == "failed"]
    assert refused and "unsigned" in refused[0]["error"]
    assert not list((device.folder / "deploy").glob("*/*.chunk")), "a chunk of an unsigned request was stored"
    assert wait_until(lambda: last_stats(device.messages).get("control", {}).get("refused", {}).get("unsigned", 0)
                      >= 2, 10)
    assert running_version(device.messages) == "4"
    online = [m for m in messages(device.messages, "/status") if m.get("state") == "online"][-1]
    assert online["models"][0]["signature"].startswith("verified")


def test_a_replayed_an_expired_and_a_misaddressed_command_are_refused(device, broker, keys):
    command = keys.control.command("info", {"request_id": "first"})
    publish(broker.port, [(f"edge/{DEVICE}/cmd/info", command)], retain=False)
    assert wait_until(lambda: messages(device.messages, "/cmd/info/result"), 20), device.daemon.output()
    assert messages(device.messages, "/cmd/info/result")[0]["ok"] is True
    publish(broker.port, [
        (f"edge/{DEVICE}/cmd/info", command),  # captured on the broker and sent again
        (f"edge/{DEVICE}/cmd/info", keys.control.signer.seal(  # signed long ago, for a minute
            new_claims("cmd/info", {}, prefix="edge", device=DEVICE, lifetime_s=60, now=1.0e9))),
        (f"edge/{DEVICE}/cmd/info", keys.control.command("info", device="dev-2")),
        (f"edge/{DEVICE}/cmd/reload", keys.control.command("info")),  # signed for info, sent as reload
    ], retain=False)
    refused = lambda: [m.get("refused") for m in messages(device.messages, "/result") if m.get("refused")]  # noqa: E731
    assert wait_until(lambda: len(refused()) >= 4, 20), device.daemon.output()
    assert sorted(refused()) == ["expired", "replay", "wrong_action", "wrong_target"], refused()


def test_a_replay_is_refused_after_a_restart(tmp_path, broker, keys, activity_recording):
    keys.recording = activity_recording
    config, _ = start_device(tmp_path, broker, keys, keys.v4)
    command = keys.control.command("info", {"request_id": "once"})
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        for attempt in range(2):
            daemon = DaemonProcess(config)
            try:
                assert wait_until(lambda a=attempt: len(onlines(everything)) > a, 60), daemon.output()
                publish(broker.port, [(f"edge/{DEVICE}/cmd/info", command)], retain=False)
                assert wait_until(lambda a=attempt: len(messages(everything, "/cmd/info/result")) > a, 20)
            finally:
                assert daemon.terminate() == 0, daemon.output()
    first, second = messages(everything, "/cmd/info/result")
    assert first["ok"] is True and second["refused"] == "replay", second


def test_an_older_signed_bundle_is_not_installed_unless_a_signed_request_allows_it(device, broker, keys):
    """The issue's second attack: re-publishing a bundle the fleet key once signed rolled the device back."""
    from edge_fleet.deploy import deploy_bundle

    result = deploy_bundle(keys.v3, broker.url, devices=[DEVICE], control_key=keys.control.private, timeout_s=60,
                           chunk_size=CHUNK)
    outcome = result.devices[DEVICE]
    assert outcome.state == "failed" and "rollback" in outcome.error, outcome
    assert outcome.status.get("received", 0) == 0, "the bundle was downloaded before the rollback was refused"
    assert running_version(device.messages) == "4"
    allowed = deploy_bundle(keys.v3, broker.url, devices=[DEVICE], control_key=keys.control.private, timeout_s=60,
                            chunk_size=CHUNK, allow_downgrade=True)
    assert allowed.devices[DEVICE].state == "installed", allowed.devices[DEVICE]
    assert wait_until(lambda: running_version(device.messages) == "3", 20)


def test_a_device_restarted_on_an_older_file_refuses_to_start(tmp_path, broker, keys, activity_recording):
    keys.recording = activity_recording
    config, configured = start_device(tmp_path, broker, keys, keys.v4)
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: running_version(everything) == "4", 60), daemon.output()
        finally:
            assert daemon.terminate() == 0
    configured.write_bytes(keys.v3.read_bytes())  # someone put the old release back on the disk
    daemon = DaemonProcess(config)
    assert daemon.wait(60) != 0
    assert "refusing a rollback" in daemon.output() and "Traceback" not in daemon.output().split("stopped")[-1]


def test_deleting_the_signature_does_not_make_a_bundle_acceptable(tmp_path, keys):
    """With trusted keys configured and require_signature false, a bundle without manifest.sig is refused."""
    from edge_runtime.bundle import BundleSignatureError

    stripped = tmp_path / "stripped.bundle"
    with zipfile.ZipFile(keys.v4) as original, zipfile.ZipFile(stripped, "w") as copy:
        for info in original.infolist():
            if info.filename != "manifest.sig":
                copy.writestr(info, original.read(info.filename))
    from edge_runtime.signing import load_trusted_keys

    with pytest.raises(BundleSignatureError, match="not signed"):
        read_bundle(stripped, trusted_keys=load_trusted_keys([keys.release_pub]), require_signature=False)


def test_the_zip_bomb_is_refused_before_it_is_inflated(device, broker, keys):
    """The issue's third attack: a 0.5 MB bundle whose member inflates to 512 MB took the daemon from 61 MB to
    1,061 MB before it was refused as unsigned. Deployed with a valid control signature (the worst case: the
    control key is not the bundle key), it is now refused after reading the manifest only."""
    from tests.support.bombs import zip_bomb

    bomb = zip_bomb(device.folder.parent / "bomb.bundle", keys.v4, 512 * 1024 * 1024)
    assert bomb.stat().st_size < 1024 * 1024
    before = _peak_rss_mb(device.daemon.process.pid)
    sent = blob(bomb)  # past the fleet tool's own check, which would refuse it
    request = request_for(sent, "bomb-1", 256 * 1024)
    publish(broker.port, [*chunk_messages(sent, 256 * 1024), (f"edge/{DEVICE}/deploy/request",
                                                              keys.control.deploy(request))])
    final = lambda: [m for m in messages(device.messages, "/deploy/status")  # noqa: E731
                     if m.get("deployment_id") == "bomb-1" and m.get("state") in ("installed", "failed")]
    assert wait_until(final, 60), device.daemon.output()
    outcome = final()[0]
    assert outcome["state"] == "failed" and "not signed" in outcome["error"], outcome
    growth = _peak_rss_mb(device.daemon.process.pid) - before
    print(f"peak RSS of the daemon: {before:.0f} MB before the bomb, +{growth:.0f} MB after")
    assert growth < 64, f"the daemon's peak memory grew by {growth:.0f} MB on a refused bundle"
    assert running_version(device.messages) == "4"


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_sensor_messages_are_counted_rejections(tmp_path, broker, keys, activity_recording):
    """The issue's fourth attack: deeply nested JSON and a 309-digit ts escaped the decoder as internal errors
    with a traceback per message."""
    keys.recording = activity_recording
    config, _ = start_device(tmp_path, broker, keys, keys.v4, source={"type": "mqtt", "topic": "sensors/x"})
    with Collector(broker.port, f"edge/{DEVICE}/#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: running_version(everything) == "4", 60), daemon.output()
            hostile = [b"[" * 100_000 + b"]" * 100_000, b'{"ts": 1' + b"0" * 309 + b', "values": [1,2,3,4,5,6]}']
            reasons = lambda: [m["reason"] for m in messages(everything, "/errors")]  # noqa: E731
            # sent again until they arrive: the source subscribes once the daemon runs, a little after `online`
            assert send_sentinels(lambda: publish(broker.port, [("sensors/x", payload) for payload in hostile * 3],
                                                  retain=False), lambda: len(reasons()) >= 6, 30), daemon.output()
            assert sorted(set(reasons())) == ["bad_schema", "malformed_json"], reasons()
            assert wait_until(lambda: last_stats(everything).get("models", {}).get("activity", {}).get("invalid", 0)
                              >= 6, 10)
        finally:
            assert daemon.terminate() == 0
    assert "Traceback" not in daemon.output() and "internal_error" not in daemon.output()

