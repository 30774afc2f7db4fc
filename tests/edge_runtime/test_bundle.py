"""The bundle format (edge_runtime.bundle): writing, reading and every reason to refuse a bundle."""

from __future__ import annotations

import json
import stat
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime import signing
from edge_runtime.bundle import (
    SCHEMA_VERSION,
    BundleError,
    BundleSignatureError,
    Manifest,
    manifest_bytes,
    pack_golden,
    read_bundle,
    sha256_hex,
    write_bundle,
)

MODEL = b"\x08\x07not really onnx" * 50


def make_manifest(**changes) -> Manifest:
    data = {
        "name": "activity",
        "version": "3",
        "created": "2025-01-31T12:00:00Z",
        "producer": {"tool": "edge-convert", "version": "0.1.0"},
        "target": {"board": "raspberry-pi-4", "arch": "aarch64", "config": {"name": "raspberry-pi-4"}},
        "model": {"path": "model.onnx", "format": "onnx", "precision": "int8"},
        "inputs": [{"name": "x", "shape": ["batch", 3, 128], "dtype": "float32", "layout": "channels_first"}],
        "outputs": [{"name": "scores", "shape": [None, 6], "dtype": "float32"}],
        "card": {"name": "activity", "labels": ["walk", "run"]},
        "golden": {"rtol": 1e-3, "atol": 1e-4},
        "verification": {"max_abs_error": 0.01},
        "reference": {"accuracy": 0.93},
    }
    data.update(changes)
    return Manifest.model_validate(data)


def make_members() -> dict[str, bytes]:
    golden = pack_golden({"x": np.ones((1, 3, 128), np.float32)}, {"scores": np.zeros((1, 6), np.float32)})
    return {"model.onnx": MODEL, "golden.npz": golden}


def write(path: Path, signing_key: Ed25519PrivateKey | None = None, **changes) -> Manifest:
    return write_bundle(path, make_manifest(**changes), make_members(), signing_key=signing_key)


def rewrite_zip(path: Path, replace: dict[str, bytes | None] | None = None, add: dict | None = None) -> None:
    """Rebuild the archive with some members changed (None drops one): what an attacker or bit rot does."""
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    for name, data in (replace or {}).items():
        if data is None:
            del contents[name]
        else:
            contents[name] = data
    contents.update(add or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def edit_manifest(path: Path, **changes) -> None:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest.update(changes)
    rewrite_zip(path, {"manifest.json": json.dumps(manifest).encode()})


def test_round_trip(tmp_path):
    path = tmp_path / "activity.bundle"
    written = write(path)

    bundle = read_bundle(path)

    assert bundle.path == path
    assert bundle.manifest == written
    assert bundle.manifest.schema_version == SCHEMA_VERSION
    assert bundle.manifest.inputs[0].shape == ["batch", 3, 128]
    assert bundle.manifest.outputs[0].shape == [None, 6]
    assert bundle.model_bytes() == MODEL
    assert bundle.read("golden.npz") == make_members()["golden.npz"]
    assert bundle.signature_status == "unsigned"
    assert bundle.signer_key_id is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(BundleError, match="no member"):
        bundle.read("other.bin")


def test_released_members_are_refused_clearly_and_the_rest_stays_readable(tmp_path):
    """A loaded model's bytes are let go (the backend has them); the golden output stays for `bench`."""
    path = tmp_path / "model.bundle"
    write(path)
    bundle = read_bundle(path)
    bundle.release(bundle.manifest.model.path)
    with pytest.raises(BundleError, match="'model.onnx' was released once the model was loaded"):
        bundle.model_bytes()
    assert bundle.read("golden.npz") == make_members()["golden.npz"]
    assert bundle.names == ["golden.npz", "model.onnx"]


def test_files_table_lists_every_member_with_sha256_and_size(tmp_path):
    members = make_members()
    manifest = make_manifest()
    assert manifest.files == {}

    written = write_bundle(tmp_path / "a.bundle", manifest, members)

    assert set(written.files) == {"model.onnx", "golden.npz"}
    for name, data in members.items():
        assert written.files[name].sha256 == sha256_hex(data)
        assert written.files[name].size == len(data)
    with zipfile.ZipFile(tmp_path / "a.bundle") as archive:
        assert sorted(archive.namelist()) == ["golden.npz", "manifest.json", "model.onnx"]
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())


def test_manifest_bytes_are_deterministic_sorted_and_indented(tmp_path, monkeypatch):
    first, second = tmp_path / "first.bundle", tmp_path / "second.bundle"
    written = write(first)
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)  # a day later: the archive must not record the time
    write(second)

    with zipfile.ZipFile(first) as archive:
        stored = archive.read("manifest.json")
    assert stored == manifest_bytes(written) == manifest_bytes(Manifest.model_validate_json(stored))
    keys = list(json.loads(stored, object_pairs_hook=lambda pairs: [key for key, _ in pairs]))
    assert keys == sorted(keys)
    assert stored.startswith(b'{\n  "card": ')
    assert first.read_bytes() == second.read_bytes()


def test_numpy_values_and_nan_in_the_manifest_become_plain_json(tmp_path):
    path = tmp_path / "a.bundle"
    verification = {"error": float("nan"), "limit": np.float32(np.inf), "n": np.int64(3), "v": np.arange(2)}
    written = write(path, verification=verification)

    assert written.verification == {"error": None, "limit": None, "n": 3, "v": [0, 1]}
    assert read_bundle(path).manifest == written
    with zipfile.ZipFile(path) as archive:
        assert b"NaN" not in archive.read("manifest.json")


def test_signed_bundle_verifies_with_its_key(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "a.bundle"
    write(path, signing_key=key)

    bundle = read_bundle(path, trusted_keys=[key.public_key()], require_signature=True)

    expected = signing.key_id(key.public_key())
    assert bundle.signature_status == f"verified: key {expected}"
    assert bundle.signer_key_id == expected
    with zipfile.ZipFile(path) as archive:
        signature = json.loads(archive.read("manifest.sig"))
        assert signing.verify_signature(archive.read("manifest.json"), signature, [key.public_key()])


def test_signed_bundle_without_trusted_keys_is_reported_not_verified(tmp_path):
    path = tmp_path / "a.bundle"
    write(path, signing_key=Ed25519PrivateKey.generate())

    bundle = read_bundle(path)

    assert bundle.signature_status == "signed, not verified (no trusted keys configured)"
    assert bundle.signer_key_id is None
    with pytest.raises(BundleSignatureError, match="no trusted keys"):
        read_bundle(path, require_signature=True)


def test_signature_from_another_key_is_refused(tmp_path):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "a.bundle"
    write(path, signing_key=key)

    with pytest.raises(BundleSignatureError, match="not among the trusted keys") as caught:
        read_bundle(path, trusted_keys=[other.public_key()])

    assert isinstance(caught.value, BundleError)
    assert isinstance(caught.value, signing.SignatureError)
    assert signing.key_id(key.public_key()) in str(caught.value)


def test_modified_member_fails_its_checksum(tmp_path):
    path = tmp_path / "a.bundle"
    written = write(path)
    tampered = MODEL.replace(b"onnx", b"ONNX", 1)
    rewrite_zip(path, {"model.onnx": tampered})

    with pytest.raises(BundleError, match="model.onnx: checksum mismatch") as caught:
        read_bundle(path)

    message = str(caught.value)
    assert written.files["model.onnx"].sha256 in message
    assert sha256_hex(tampered) in message
    assert "modified or corrupted" in message


def test_manifest_changed_after_signing_is_refused(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "a.bundle"
    write(path, signing_key=key)
    edit_manifest(path, name="something-else")

    with pytest.raises(BundleSignatureError, match="changed after signing"):
        read_bundle(path, trusted_keys=[key.public_key()])


def test_require_signature_refuses_an_unsigned_bundle(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)

    with pytest.raises(BundleError, match="bundle is not signed"):
        read_bundle(path, trusted_keys=[Ed25519PrivateKey.generate().public_key()], require_signature=True)
    assert read_bundle(path).signature_status == "unsigned"


def test_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    path.write_bytes(b"this is a model, honest")

    with pytest.raises(BundleError, match=r"not a bundle \(not a zip archive\)"):
        read_bundle(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        read_bundle(tmp_path / "nothing.bundle")


def test_missing_manifest_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    rewrite_zip(path, {"manifest.json": None})

    with pytest.raises(BundleError, match="has no manifest.json"):
        read_bundle(path)


def test_member_not_in_the_manifest_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    rewrite_zip(path, add={"payload.sh": b"#!/bin/sh\n"})

    with pytest.raises(BundleError, match="not listed in the manifest: payload.sh"):
        read_bundle(path)


def test_listed_member_missing_from_the_archive_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    rewrite_zip(path, {"golden.npz": None})

    with pytest.raises(BundleError, match="golden.npz: listed in the manifest but missing"):
        read_bundle(path)


def test_duplicate_member_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("model.onnx", b"evil")

    with pytest.raises(BundleError, match="appears twice"):
        read_bundle(path)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.onnx",
        "a/../../evil",
        "/etc/passwd",
        "C:/evil",
        "a\\..\\evil",
        "manifest.json",
        "manifest.sig",
    ],
)
def test_unsafe_member_names_are_refused_on_write(tmp_path, name):
    members = make_members() | {name: b"x"}

    with pytest.raises(BundleError, match="unsafe member name|reserved"):
        write_bundle(tmp_path / "a.bundle", make_manifest(), members)
    assert list(tmp_path.iterdir()) == []


def test_path_traversal_inside_an_archive_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    rewrite_zip(path, add={"../../evil.sh": b"x"})

    with pytest.raises(BundleError, match="unsafe member name"):
        read_bundle(path)


def test_size_limit_refuses_zip_bombs(tmp_path):
    path = tmp_path / "a.bundle"
    members = make_members() | {"padding.bin": bytes(4 * 1024 * 1024)}
    write_bundle(path, make_manifest(), members)
    assert path.stat().st_size < 100_000  # compresses to almost nothing

    with pytest.raises(BundleError, match="exceeds the limit"):
        read_bundle(path, max_size=1024 * 1024)
    assert read_bundle(path).read("padding.bin") == members["padding.bin"]


def test_model_file_must_be_a_member(tmp_path):
    manifest = make_manifest(model={"path": "model.tflite", "format": "tflite", "precision": "fp32"})

    with pytest.raises(BundleError, match="model file 'model.tflite' is not among the members"):
        write_bundle(tmp_path / "a.bundle", manifest, make_members())


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "a.bundle"
    members = make_members() | {"notes.txt": "not bytes"}

    with pytest.raises(TypeError, match="notes.txt"):
        write_bundle(path, make_manifest(), members)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_existing_bundle(tmp_path, monkeypatch):
    path = tmp_path / "a.bundle"
    write(path)
    good = path.read_bytes()

    with pytest.raises(TypeError):
        write_bundle(path, make_manifest(version="4"), make_members() | {"notes.txt": 42})
    assert path.read_bytes() == good

    # fail in the middle of writing the archive: the temporary file must go, the old bundle must stay
    calls = []
    original = zipfile.ZipFile.writestr

    def failing_writestr(self, info, data, *args, **kwargs):
        calls.append(info)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, info, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="disk full"):
        write(path, version="4")
    assert len(calls) == 2
    assert path.read_bytes() == good
    assert [entry.name for entry in tmp_path.iterdir()] == ["a.bundle"]


def test_newer_schema_is_refused_with_an_upgrade_hint(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    edit_manifest(path, schema_version=SCHEMA_VERSION + 1, new_feature={"x": 1})

    with pytest.raises(BundleError) as caught:
        read_bundle(path)

    assert str(caught.value) == (
        f"bundle schema {SCHEMA_VERSION + 1} is newer than this runtime understands ({SCHEMA_VERSION}); "
        "upgrade edge-runtime"
    )


def test_unknown_key_in_the_current_schema_is_refused(tmp_path):
    path = tmp_path / "a.bundle"
    write(path)
    edit_manifest(path, new_feature=True)

    with pytest.raises(BundleError, match="new_feature: unknown key"):
        read_bundle(path)


def test_invalid_manifest_field_is_named(tmp_path):
    path = tmp_path / "a.bundle"
    written = write(path)
    edit_manifest(path, model=written.model.model_dump() | {"format": "pickle"})

    with pytest.raises(BundleError, match="model.format: Input should be 'onnx' or 'tflite'"):
        read_bundle(path)


def test_created_must_be_utc():
    assert make_manifest(created="2025-01-31T12:00:00+00:00").created.endswith("+00:00")
    with pytest.raises(ValueError, match="must be UTC"):
        make_manifest(created="2025-01-31T12:00:00+02:00")
    with pytest.raises(ValueError, match="ISO-8601"):
        make_manifest(created="yesterday")


def test_golden_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((1, 3, 128)).astype(np.float32), "mask": np.array([[1, 0]], np.int64)}
    outputs = {"scores": rng.random((1, 6)).astype(np.float16)}
    path = tmp_path / "a.bundle"
    write_bundle(path, make_manifest(), {"model.onnx": MODEL, "golden.npz": pack_golden(inputs, outputs)})

    got_inputs, got_outputs = read_bundle(path).golden()

    assert set(got_inputs) == {"x", "mask"}
    assert set(got_outputs) == {"scores"}
    for expected, got in ((inputs, got_inputs), (outputs, got_outputs)):
        for name, array in expected.items():
            assert got[name].dtype == array.dtype
            np.testing.assert_array_equal(got[name], array)
