"""The deployment protocol's edges: what the fleet tool refuses before sending, requests a device refuses
(garbage, unknown model, too large, no trusted keys) without falling over, and transfers that resume after a
broker restart and after a daemon restart without fetching the verified chunks again.

An interruption "in the middle of receiving" is made deterministic by publishing the chunks in two parts: the
device has stored the first part (its chunk files are on disk) when the broker or the daemon is stopped."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from edge_fleet.deploy import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    DeployError,
    DeployResult,
    DeviceOutcome,
    check_bundle,
    deploy_bundle,
    main_deploy,
)
from edge_runtime.contract import DeployRequest
from tests.support.broker import Collector, MosquittoBroker
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

CHUNK = 2048  # the fp32 activity bundle (~130 KB) makes about 64 chunks

# every request of these tests is signed with the control key the devices trust
pytestmark = pytest.mark.usefixtures("use_control_key")


@pytest.fixture(scope="module")
def release(activity_sample, tmp_path_factory):
    return build_release(activity_sample, tmp_path_factory.mktemp("release"))


# -- the fleet tool, before anything is sent ----------------------------------------------------------------------
def test_the_tool_refuses_what_it_must_not_send(tmp_path, release, capsys):
    not_a_bundle = tmp_path / "notes.bundle"
    not_a_bundle.write_text("hello")
    with pytest.raises(DeployError, match="not a bundle"):
        check_bundle(not_a_bundle, None)
    with pytest.raises(DeployError, match="checksum mismatch"):
        check_bundle(release / "tampered.bundle", None)
    with pytest.raises(DeployError, match="not among the trusted keys"):
        check_bundle(release / "untrusted.bundle", release / "release.pub")
    with pytest.raises(DeployError, match="the PUBLIC key|not a public key"):
        check_bundle(release / "fp32.bundle", release / "release.key")
    assert check_bundle(release / "fp32.bundle", release / "release.pub").name == "activity"
    for kwargs, reason in (({}, "say which devices"), ({"devices": ["a/b"]}, "not a device id"),
                           ({"devices": ["a"], "canary": -1}, "canary")):
        with pytest.raises(DeployError, match=reason):
            deploy_bundle(release / "fp32.bundle", "mqtt://127.0.0.1:1", **kwargs)
    args = argparse.Namespace(bundle=not_a_bundle, broker="mqtt://127.0.0.1:1", device=["a"], group=None, canary=0,
                              signing_key=None, model=None, timeout=1.0)
    assert main_deploy(args) == EXIT_REFUSED
    assert "not a bundle" in capsys.readouterr().err


def test_a_request_is_consistent_and_a_broken_one_is_caught(release):
    bundle = blob(release / "fp32.bundle")
    request = request_for(bundle, "20250101T000000Z-abc", CHUNK, model="activity")
    parsed = DeployRequest.model_validate(request)
    assert parsed.chunks == len(parsed.chunk_sha256) == -(-len(bundle.data) // CHUNK)
    assert parsed.chunk_topic == f"edge/bundles/{bundle.sha256}/chunk"
    for change in ({"chunks": request["chunks"] + 1}, {"chunk_sha256": request["chunk_sha256"][:-1]},
                   {"chunk_topic": "edge/bundles/#"}, {"bundle_sha256": "xyz"}, {"deployment_id": "a/b"}):
        with pytest.raises(ValidationError):
            DeployRequest.model_validate({**request, **change})


def test_exit_codes():
    def result(*states: str, halted: str | None = None) -> DeployResult:
        devices = {f"d{i}": DeviceOutcome(f"d{i}", state) for i, state in enumerate(states)}
        return DeployResult("id", "sha", devices, halted)

    assert result("installed", "installed").exit_code == EXIT_OK
    assert result("installed", "pending").exit_code == EXIT_PENDING
    assert result("failed", "pending").exit_code == EXIT_FAILED
    assert result("installed", "not requested", halted="canary").exit_code == EXIT_FAILED


def test_an_unknown_group_is_refused(broker, release):
    with pytest.raises(DeployError, match="no device names group 'nowhere'"):
        deploy_bundle(release / "fp32.bundle", broker.url, group="nowhere", timeout_s=2)
    with Collector(broker.port, "edge/bundles/#") as chunks:
        assert not wait_until(lambda: chunks.snapshot(), 0.3)  # nothing was sent


# -- the device ----------------------------------------------------------------------------------------------------
def test_bad_requests_fail_with_a_reason_and_the_daemon_runs_on(tmp_path, broker, activity_bundle,
                                                                activity_recording, release):
    config = device_config(tmp_path, "dev-x", broker.url, activity_bundle, activity_recording, trusted_key=None,
                           deploy={"max_bundle_bytes": 100_000})
    fp32 = blob(release / "fp32.bundle")
    (tmp_path / "small.bin").write_bytes(b"x" * 5000)  # under the limit; refused before anyone looks inside
    small = blob(tmp_path / "small.bin")
    cases = [
        (b"{not json", None, "not JSON"),
        ({"deployment_id": "no-fields"}, "no-fields", "bad request: "),
        (request_for(fp32, "other-model", CHUNK, model="nope"), "other-model", "no model 'nope'"),
        (request_for(fp32, "too-large", CHUNK), "too-large", "exceeds deploy.max_bundle_bytes (100000)"),
        (request_for(small, "no-keys", CHUNK), "no-keys", "no security.trusted_keys"),
    ]
    publish(broker.port, chunk_messages(small, CHUNK))
    with Collector(broker.port, "edge/dev-x/#") as seen:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: (last_status(seen, "dev-x") or {}).get("state") == "online", 30), \
                daemon.output()
            for index, (request, deployment_id, reason) in enumerate(cases, start=1):
                publish(broker.port, [request_message("dev-x", request)])
                assert wait_until(lambda i=index: len([m for m in messages(seen, "/deploy/status")
                                                       if m["state"] == "failed"]) >= i, 20), daemon.output()
                failed = [m for m in messages(seen, "/deploy/status") if m["state"] == "failed"][-1]
                assert failed["deployment_id"] == deployment_id and reason in failed["error"], failed
            count = len(messages(seen, "/predictions/activity"))
            assert wait_until(lambda: len(messages(seen, "/predictions/activity")) > count + 3, 10)
            assert last_status(seen, "dev-x")["models"][0]["precision"] == "int8"
        finally:
            assert daemon.terminate() == 0, daemon.output()
    assert (tmp_path / "dev-x" / "activity.bundle").read_bytes() == activity_bundle.read_bytes()


def chunk_files(tmp_path, device: str, sha256: str) -> int:
    folder = tmp_path / device / "deploy" / sha256
    return len(list(folder.glob("*.chunk"))) if folder.exists() else 0


@pytest.mark.broker
@pytest.mark.parametrize("interruption", ["broker restart", "daemon restart"])
def test_an_interrupted_transfer_resumes_without_fetching_verified_chunks(tmp_path, activity_bundle,
                                                                         activity_recording, release, interruption):
    fp32 = blob(release / "fp32.bundle")
    request = request_for(fp32, f"resume-{interruption.split()[0]}", CHUNK)
    total, half = request["chunks"], request["chunks"] // 2
    assert total >= 40
    with MosquittoBroker(persistence=True) as broker:  # retained chunks and the request survive the restart
        config = device_config(tmp_path, "dev-r", broker.url, activity_bundle, activity_recording,
                               trusted_key=release / "release.pub")
        daemon = DaemonProcess(config)
        try:
            with Collector(broker.port, "edge/dev-r/#", client_id="resume-collector", clean_session=False) as seen:
                assert wait_until(lambda: (last_status(seen, "dev-r") or {}).get("state") == "online", 30)
                publish(broker.port, [request_message("dev-r", request), *chunk_messages(fp32, CHUNK, range(half))])
                assert wait_until(lambda: chunk_files(tmp_path, "dev-r", fp32.sha256) == half, 20), daemon.output()
                if interruption == "broker restart":
                    broker.restart()
                else:
                    assert daemon.terminate() == 0
                    daemon = DaemonProcess(config)
                publish(broker.port, chunk_messages(fp32, CHUNK, range(half, total)))
                assert wait_until(lambda: any(m["state"] in ("installed", "failed") for m in
                                              deploy_states(seen, "dev-r", request["deployment_id"])), 30), \
                    daemon.output()
                final = deploy_states(seen, "dev-r", request["deployment_id"])[-1]
                assert final["state"] == "installed", final
                assert final["received"] == total, final
                if interruption == "broker restart":  # the same process stored every chunk exactly once
                    # (a chunk in flight when the broker went down may arrive twice: at least once, never lost)
                    assert final["resumed"] == 0 and final["downloaded"] == total, final
                else:  # the new process found the first half verified on disk and fetched only the rest
                    assert final["duplicates"] == 0, final
                    assert final["resumed"] == half and final["downloaded"] == total - half, final
                assert (tmp_path / "dev-r" / "activity.bundle").read_bytes() == fp32.data
                assert not (tmp_path / "dev-r" / "deploy" / fp32.sha256).exists()  # chunks dropped once installed
        finally:
            assert daemon.terminate() == 0, daemon.output()
