"""ControlAuthority, NonceCache and InstalledVersions alone: what makes a command acceptable, a replay a refusal
(across restarts and past the cache's bound), and an older bundle a rollback."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from edge_runtime.contract import new_claims
from edge_runtime.control.authority import ControlRefused
from edge_runtime.control.nonces import NonceCache
from edge_runtime.control.versions import InstalledVersions, RollbackRefused, older
from tests.support.control import ControlKey

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> ControlKey:
    return ControlKey(tmp_path_factory.mktemp("control"))


@pytest.fixture(scope="module")
def intruder(tmp_path_factory) -> ControlKey:
    return ControlKey(tmp_path_factory.mktemp("intruder"), "intruder")


def at(key: ControlKey, action: str = "cmd/reload", *, issued: float = NOW, lifetime: float = 300.0,
       device: str | None = "dev-1", group: str | None = None, prefix: str = "edge", body: dict | None = None) -> bytes:
    claims = new_claims(action, body or {}, prefix=prefix, device=device, group=group, lifetime_s=lifetime,
                        now=issued)
    return key.signer.seal(claims)


def refusal(authority, action: str, payload: bytes) -> str:
    with pytest.raises(ControlRefused) as caught:
        authority.check(action, payload)
    return caught.value.reason


def test_a_signed_command_is_accepted_once(key):
    authority = key.authority(clock=lambda: NOW + 1)
    payload = at(key, body={"model": "m"})
    assert authority.check("cmd/reload", payload).body == {"model": "m"}
    assert refusal(authority, "cmd/reload", payload) == "replay"
    assert authority.stats() == {"accepted": 1, "refused": {"replay": 1}}


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"model": "m"}', "unsigned"),
    (b"", "unsigned"),
    (b"[1, 2]", "malformed"),
    (b"{not json", "malformed"),
    (b"[" * 50_000, "malformed"),
    (b'{"schema": 2, "claims": 5, "signature": {}}', "malformed"),
    (b'{"schema": 2, "claims": "{}", "signature": {"algorithm": "ed25519", "key_id": "x", "signature": "@@"}}',
     "bad_signature"),
])
def test_what_is_not_a_signed_envelope(key, payload, reason):
    assert refusal(key.authority(clock=lambda: NOW), "cmd/reload", payload) == reason


def test_signature_target_action_and_time(key, intruder):
    authority = key.authority(group="lab", clock=lambda: NOW)
    assert refusal(authority, "cmd/reload", at(intruder)) == "untrusted_key"
    tampered = json.loads(at(key))
    tampered["claims"] = tampered["claims"].replace("dev-1", "dev-2")
    assert refusal(authority, "cmd/reload", json.dumps(tampered).encode()) == "bad_signature"
    assert refusal(authority, "cmd/reload", at(key, device="dev-2")) == "wrong_target"
    assert refusal(authority, "cmd/reload", at(key, device=None, group="other")) == "wrong_target"
    assert refusal(authority, "cmd/reload", at(key, prefix="elsewhere")) == "wrong_target"
    assert refusal(authority, "deploy/request", at(key)) == "wrong_action"
    assert refusal(authority, "cmd/reload", at(key, issued=NOW - 600)) == "expired"
    assert refusal(authority, "cmd/reload", at(key, issued=NOW + 3600)) == "not_yet_valid"
    assert refusal(authority, "cmd/reload", at(key, lifetime=30 * 24 * 3600.0)) == "too_long"
    assert authority.check("cmd/reload", at(key, device=None, group="lab")).claims.group == "lab"


def test_no_control_keys_refuses_everything(tmp_path):
    from edge_runtime.contract import DeviceTopics
    from edge_runtime.control.authority import ControlAuthority

    authority = ControlAuthority([], DeviceTopics("edge", "dev-1"), None, NonceCache(None))
    signer = ControlKey(tmp_path)
    assert refusal(authority, "cmd/reload", signer.command("reload")) == "no_control_keys"


def test_nonces_survive_a_restart(key, tmp_path):
    path = tmp_path / "nonces.json"
    payload = at(key)
    assert key.authority(nonces=path, clock=lambda: NOW).check("cmd/reload", payload)
    assert refusal(key.authority(nonces=path, clock=lambda: NOW + 1), "cmd/reload", payload) == "replay"


def test_a_damaged_nonce_file_refuses_what_was_issued_before(key, tmp_path):
    path = tmp_path / "nonces.json"
    old = at(key, issued=NOW - 10)
    path.write_text("{broken")
    authority = key.authority(nonces=path, clock=lambda: NOW)
    authority.nonces.issued_floor = NOW - 5  # what loading the broken file set (to its load time)
    assert refusal(authority, "cmd/reload", old) == "replay"
    assert authority.check("cmd/reload", at(key, issued=NOW))


def test_the_cache_is_bounded_and_an_evicted_nonce_is_still_refused():
    cache = NonceCache(None, capacity=3)
    for index in range(10):
        assert cache.accept(f"{index:032x}", NOW, NOW + 100 + index, NOW) is None
    assert len(cache) == 3
    assert cache.accept(f"{0:032x}", NOW, NOW + 100, NOW) is not None  # evicted, and still refused
    assert cache.accept(f"{99:032x}", NOW, NOW + 300, NOW) is None  # a fresh one passes
    assert cache.accept(f"{97:032x}", NOW + 500, NOW + 800, NOW + 500) is None  # expired ones made room


def bundle(version: str, created: str) -> SimpleNamespace:
    manifest = SimpleNamespace(name="activity", version=version, created=created,
                               files={"model.onnx": SimpleNamespace(sha256="ab")},
                               model=SimpleNamespace(path="model.onnx"))
    return SimpleNamespace(manifest=manifest, path="x.bundle")


@pytest.mark.parametrize(("candidate", "current", "is_older"), [
    (("3", "2025-01-01T00:00:00Z"), ("4", "2024-01-01T00:00:00Z"), True),  # the version says older
    (("1.10", "2024-01-01T00:00:00Z"), ("1.9", "2025-01-01T00:00:00Z"), False),  # 1.10 > 1.9
    (("3", "2025-01-01T00:00:00Z"), ("3", "2025-06-01T00:00:00Z"), True),  # same version: built earlier
    (("3", "2025-06-01T00:00:00Z"), ("3", "2025-06-01T00:00:00Z"), False),  # the same bundle again
    (("beta", "2025-06-01T00:00:00Z"), ("alpha", "2025-01-01T00:00:00Z"), False),  # names: by build time
])
def test_what_older_means(candidate, current, is_older):
    def as_dict(pair):
        return {"version": pair[0], "created": pair[1]}

    assert older(as_dict(candidate), as_dict(current)) is is_older


def test_versions_are_kept_across_restarts_and_a_downgrade_needs_permission(tmp_path):
    path = tmp_path / "installed.json"
    InstalledVersions(path).record("activity", bundle("4", "2025-06-01T00:00:00Z"))
    versions = InstalledVersions(path)
    with pytest.raises(RollbackRefused, match="refusing a rollback"):
        versions.check("activity", bundle("3", "2025-01-01T00:00:00Z"))
    versions.check("activity", bundle("3", "2025-01-01T00:00:00Z"), allow_downgrade=True)
    versions.check("other-slot", bundle("1", "2020-01-01T00:00:00Z"))
    with pytest.raises(RollbackRefused):
        versions.check_claimed("activity", "3", "2025-01-01T00:00:00Z", allow_downgrade=False)
    versions.check_claimed("activity", "5", "2025-01-01T00:00:00Z", allow_downgrade=False)
