"""`edge-fleet deploy` against real mosquitto and real daemons: a signed bundle installs on the chosen devices
(status, file on disk, restart); a tampered or untrusted bundle is refused and the old model keeps running; a
refusing canary halts the rollout; a device that was offline installs the rollout when it starts."""

from __future__ import annotations

import argparse
import time

import pytest

from edge_fleet.deploy import EXIT_FAILED, EXIT_OK, EXIT_PENDING, DeployError, deploy_bundle, main_deploy
from edge_runtime.bundle import read_bundle
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until
from tests.support.deploy import (
    blob,
    build_release,
    chunk_messages,
    deploy_states,
    device_config,
    last_status,
    publish,
    request_for,
    request_message,
    use_control_key,  # noqa: F401 (a fixture)
)

CHUNK = 16 * 1024

# every request of these tests is signed with the control key the devices trust
pytestmark = pytest.mark.usefixtures("use_control_key")


@pytest.fixture(scope="module")
def release(activity_sample, tmp_path_factory):
    return build_release(activity_sample, tmp_path_factory.mktemp("release"))


@pytest.fixture
def fleet(tmp_path, broker, activity_bundle, activity_recording, release):
    """`fleet(device, group=None)` starts a daemon running the int8 activity bundle, trusting release.pub; a
    device started again keeps its folder (bundle, spool, deploy state)."""
    started: list[DaemonProcess] = []

    def start(device: str, group: str | None = None, run: bool = True) -> DaemonProcess | None:
        config = tmp_path / device / "daemon.yaml"
        if not config.exists():
            device_config(tmp_path, device, broker.url, activity_bundle, activity_recording,
                          trusted_key=release / "release.pub", group=group)
        if not run:
            return None
        daemon = DaemonProcess(config)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def online(collector, device: str, since: float = 0.0) -> dict | None:
    status = last_status(collector, device)
    return status if status and status["state"] == "online" and status["started"] >= since else None


def model_sha(bundle) -> str:
    manifest = read_bundle(bundle).manifest
    return manifest.files[manifest.model.path].sha256


def no_retained(port: int, topic: str) -> bool:
    with Collector(port, topic) as retained:
        assert retained.sync()  # retained messages come with the subscription, so before the sentinel
        return not [m for m in retained.snapshot() if m[2]]


def test_a_signed_bundle_installs_on_the_group_and_survives_a_restart(tmp_path, broker, fleet, release):
    fp32 = release / "fp32.bundle"
    with Collector(broker.port, "edge/#") as seen:
        daemons = {device: fleet(device, group) for device, group in
                   (("dev-a", "lab"), ("dev-b", "lab"), ("dev-c", "office"))}
        assert wait_until(lambda: all(online(seen, d) for d in daemons), 30), daemons["dev-a"].output()
        assert online(seen, "dev-a")["group"] == "lab" and online(seen, "dev-a")["schema"] == 1
        lines: list[tuple[str, str]] = []
        result = deploy_bundle(fp32, broker.url, group="lab", signing_key=release / "release.pub", timeout_s=30,
                               chunk_size=CHUNK, progress=lambda device, text: lines.append((device, text)))
        assert result.exit_code == EXIT_OK, (result, daemons["dev-a"].output())
        assert sorted(result.installed) == ["dev-a", "dev-b"] and sorted(result.devices) == ["dev-a", "dev-b"]
        for device in ("dev-a", "dev-b"):
            assert wait_until(lambda d=device: online(seen, d)["models"][0]["precision"] == "fp32", 10)
            model = online(seen, device)["models"][0]
            assert model["model_sha256"] == model_sha(fp32) and model["signature"].startswith("verified")
            assert (tmp_path / device / "activity.bundle").read_bytes() == fp32.read_bytes()
            texts = [text for d, text in lines if d == device]
            assert texts[0] == "requested" and texts[-1].startswith("installed")
            assert any(text.startswith("receiving ") for text in texts), texts
            states = [m["state"] for m in deploy_states(seen, device, result.deployment_id)]
            assert states[-2:] == ["verifying", "installed"], states
        assert online(seen, "dev-c")["models"][0]["precision"] == "int8"  # another group: untouched
        assert not deploy_states(seen, "dev-c", result.deployment_id)
        count = len(messages(seen, "dev-a/predictions/activity"))
        assert wait_until(lambda: len(messages(seen, "dev-a/predictions/activity")) > count + 3, 10)

        # every device answered: the retained requests and chunks are gone from the broker
        assert no_retained(broker.port, "edge/+/deploy/request")
        assert no_retained(broker.port, "edge/bundles/#")

        # the file on disk is what a restart runs
        restarted = time.time()
        assert daemons["dev-a"].terminate() == 0
        again = fleet("dev-a")
        assert wait_until(lambda: online(seen, "dev-a", since=restarted), 30), again.output()
        assert online(seen, "dev-a", since=restarted)["models"][0]["precision"] == "fp32"


def test_tampered_untrusted_and_garbage_bundles_are_refused_and_the_old_model_runs_on(tmp_path, broker, fleet,
                                                                                       release):
    with Collector(broker.port, "edge/#") as seen:
        daemon = fleet("dev-a")
        assert wait_until(lambda: online(seen, "dev-a"), 30), daemon.output()
        original = (tmp_path / "dev-a" / "activity.bundle").read_bytes()

        # signed by a key the device does not trust: the tool (without --signing-key) cannot tell, the device can
        result = deploy_bundle(release / "untrusted.bundle", broker.url, devices=["dev-a"], timeout_s=30,
                               chunk_size=CHUNK)
        assert result.exit_code == EXIT_FAILED and result.failed == ["dev-a"], result
        assert "not among the trusted keys" in result.devices["dev-a"].error

        # a member changed after signing: the tool refuses it locally...
        with pytest.raises(DeployError, match="checksum mismatch"):
            deploy_bundle(release / "tampered.bundle", broker.url, devices=["dev-a"], timeout_s=5)
        # ...so it is sent raw, as a broken tool or an intruder on the broker would; and bytes that are no bundle
        for deployment_id, name in (("tampered-1", "tampered.bundle"), ("garbage-1", None)):
            if name is None:
                (tmp_path / "garbage.bundle").write_bytes(b"not a zip file at all" * 100)
            bundle = blob(release / name if name else tmp_path / "garbage.bundle")
            publish(broker.port, [*chunk_messages(bundle, CHUNK),
                                  request_message("dev-a", request_for(bundle, deployment_id, CHUNK))])
            assert wait_until(lambda i=deployment_id: any(m["state"] == "failed" for m in
                                                          deploy_states(seen, "dev-a", i)), 30), daemon.output()
        errors = {i: deploy_states(seen, "dev-a", i)[-1]["error"] for i in ("tampered-1", "garbage-1")}
        assert "checksum mismatch" in errors["tampered-1"], errors
        assert "not a bundle" in errors["garbage-1"], errors

        assert (tmp_path / "dev-a" / "activity.bundle").read_bytes() == original
        assert online(seen, "dev-a")["models"][0]["precision"] == "int8"
        count = len(messages(seen, "dev-a/predictions/activity"))
        assert wait_until(lambda: len(messages(seen, "dev-a/predictions/activity")) > count + 3, 10)
        assert daemon.process.poll() is None


def test_a_refusing_canary_halts_the_rollout(broker, fleet, release, capsys):
    with Collector(broker.port, "edge/#") as seen:
        daemons = {device: fleet(device) for device in ("dev-a", "dev-b", "dev-c")}
        assert wait_until(lambda: all(online(seen, d) for d in daemons), 30), daemons["dev-a"].output()
        args = argparse.Namespace(bundle=release / "untrusted.bundle", broker=broker.url,
                                  device=["dev-a", "dev-b", "dev-c"], group=None, canary=1, signing_key=None,
                                  model=None, timeout=30.0, chunk_size=CHUNK)
        assert main_deploy(args) == EXIT_FAILED
        out = capsys.readouterr().out
        assert "dev-a: failed: " in out and "not among the trusted keys" in out, out
        assert "halted: canary dev-a did not install" in out and "2 not requested" in out, out
        assert seen.sync()  # every request the tool published before it returned has reached `seen`
        requested = {topic.split("/")[1] for topic, payload, _ in seen.snapshot()
                     if topic.endswith("/deploy/request") and payload}
        assert requested == {"dev-a"}
        assert not messages(seen, "dev-b/deploy/status") and not messages(seen, "dev-c/deploy/status")
        assert all(online(seen, d)["models"][0]["precision"] == "int8" for d in daemons)
    assert no_retained(broker.port, "edge/bundles/#")  # nobody will need the chunks


def test_a_device_that_was_offline_installs_when_it_starts(tmp_path, broker, fleet, release):
    fp32 = release / "fp32.bundle"
    with Collector(broker.port, "edge/#") as seen:
        daemon = fleet("dev-a")
        fleet("dev-b", run=False)
        assert wait_until(lambda: online(seen, "dev-a"), 30), daemon.output()
        result = deploy_bundle(fp32, broker.url, devices=["dev-a", "dev-b"], signing_key=release / "release.pub",
                               timeout_s=6, chunk_size=CHUNK)
        assert result.exit_code == EXIT_PENDING, result
        assert result.installed == ["dev-a"] and result.pending == ["dev-b"]

        late = fleet("dev-b")
        assert wait_until(lambda: any(m["state"] == "installed" for m in
                                      deploy_states(seen, "dev-b", result.deployment_id)), 30), late.output()
        assert wait_until(lambda: online(seen, "dev-b")["models"][0]["precision"] == "fp32", 10)
        assert (tmp_path / "dev-b" / "activity.bundle").read_bytes() == fp32.read_bytes()

        # nobody cleared dev-b's retained request: after a restart it is seen again, and not applied again
        restarted = time.time()
        assert late.terminate() == 0
        again = fleet("dev-b")
        assert wait_until(lambda: online(seen, "dev-b", since=restarted), 30), again.output()
        assert wait_until(lambda: len([m for m in deploy_states(seen, "dev-b", result.deployment_id)
                                       if m["state"] == "installed"]) >= 2, 10)  # the stored answer, repeated
        states = [m["state"] for m in deploy_states(seen, "dev-b", result.deployment_id)]
        assert states.count("verifying") == 1, states
        assert again.output().count(f"deployment {result.deployment_id} installed") == 1
