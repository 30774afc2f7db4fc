"""Key files and ed25519 signatures (edge_runtime.signing)."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.signing import (
    SignatureError,
    SigningError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    load_trusted_keys,
    sign_bytes,
    verify_signature,
)


def test_generate_keypair_writes_a_matching_pair_with_a_private_mode(tmp_path):
    private_path, public_path = generate_keypair("release", tmp_path / "keys")

    assert private_path == tmp_path / "keys" / "release.key"
    assert public_path == tmp_path / "keys" / "release.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public_path.read_bytes()
    private_key, public_key = load_private_key(private_path), load_public_key(public_path)
    assert key_id(private_key.public_key()) == key_id(public_key)


@pytest.mark.parametrize("existing", ["release.key", "release.pub"])
def test_generate_keypair_refuses_to_overwrite(tmp_path, existing):
    (tmp_path / existing).write_bytes(b"precious")

    with pytest.raises(SigningError, match="already exists"):
        generate_keypair("release", tmp_path)

    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(path.name for path in tmp_path.iterdir()) == [existing]


def test_generate_keypair_refuses_a_name_with_a_path(tmp_path):
    with pytest.raises(SigningError, match="key name"):
        generate_keypair("../release", tmp_path / "keys")
    assert not (tmp_path / "release.key").exists()


def test_load_keys_explain_missing_and_swapped_files(tmp_path):
    private_path, public_path = generate_keypair("k", tmp_path)

    with pytest.raises(SigningError, match="not found"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(SigningError, match="not found"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(SigningError, match="this is a public key"):
        load_private_key(public_path)
    with pytest.raises(SigningError, match="this is a private key"):
        load_public_key(private_path)
    (tmp_path / "garbage.pub").write_text("hello")
    with pytest.raises(SigningError, match="not a PEM public key"):
        load_public_key(tmp_path / "garbage.pub")


def test_load_keys_refuse_other_algorithms(tmp_path):
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "ec.pub").write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SigningError, match="expected an Ed25519 private key"):
        load_private_key(tmp_path / "ec.key")
    with pytest.raises(SigningError, match="expected an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")


def test_key_id_is_a_short_sha256_of_the_raw_public_key():
    public_key = Ed25519PrivateKey.generate().public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    assert key_id(public_key) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(public_key) != key_id(Ed25519PrivateKey.generate().public_key())


def test_sign_and_verify_round_trip():
    private_key = Ed25519PrivateKey.generate()
    signature = sign_bytes(b"manifest", private_key)

    assert signature["algorithm"] == "ed25519"
    assert signature["key_id"] == key_id(private_key.public_key())
    assert sign_bytes(b"manifest", private_key) == signature  # ed25519 is deterministic
    assert verify_signature(b"manifest", signature, [private_key.public_key()]) == signature["key_id"]


def test_verify_refuses_an_untrusted_key():
    signer, trusted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate().public_key()
    signature = sign_bytes(b"manifest", signer)

    with pytest.raises(SignatureError, match=f"signed by key {signature['key_id']} which is not among"):
        verify_signature(b"manifest", signature, [trusted])


def test_verify_refuses_changed_data_and_a_forged_key_id():
    signer, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = [signer.public_key()]

    with pytest.raises(SignatureError, match="changed after signing"):
        verify_signature(b"manifest!", sign_bytes(b"manifest", signer), trusted)
    forged = sign_bytes(b"manifest", impostor) | {"key_id": key_id(signer.public_key())}
    with pytest.raises(SignatureError, match="changed after signing"):
        verify_signature(b"manifest", forged, trusted)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "rsa"}, "unsupported signature algorithm"),
        ({"signature": "not base64!"}, "not valid base64"),
        ({"key_id": None}, "string fields"),
    ],
)
def test_verify_refuses_malformed_signatures(change, message):
    signer = Ed25519PrivateKey.generate()
    signature = sign_bytes(b"manifest", signer) | change

    with pytest.raises(SignatureError, match=message):
        verify_signature(b"manifest", signature, [signer.public_key()])


def test_load_trusted_keys_from_files_and_directories(tmp_path):
    _, first = generate_keypair("first", tmp_path / "dir")
    generate_keypair("second", tmp_path / "dir")
    _, third = generate_keypair("third", tmp_path / "elsewhere")

    keys = load_trusted_keys([tmp_path / "dir", third, first])  # first appears twice: kept once

    assert sorted(key_id(key) for key in keys) == sorted(
        key_id(load_public_key(path)) for path in (first, tmp_path / "dir" / "second.pub", third)
    )


def test_load_trusted_keys_refuses_an_empty_directory(tmp_path):
    with pytest.raises(SigningError, match=r"no \*\.pub files"):
        load_trusted_keys([tmp_path])
