"""Ed25519 keys and signatures for bundles.

The converter signs the exact bytes of ``manifest.json``; the manifest lists the sha256 of every other
member, so one small signature covers the whole bundle. The device verifies it against the public keys it
was told to trust before it swaps a model in, so a bundle that was altered in transit or built by someone
else is refused instead of run.

Ed25519 because keys and signatures are tiny, signing is deterministic (the same manifest gives the same
signature, so bundles stay byte-reproducible) and `cryptography` has it on every board we target.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SigningError(Exception):
    """A key file problem: missing, of the wrong kind, or about to be overwritten."""


class SignatureError(Exception):
    """A signature that does not verify; `edge_runtime.bundle` raises a subclass that is a BundleError too."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint that names a key in signatures and messages: sha256 of the raw key, 16 hex chars."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(name: str, directory: Path) -> tuple[Path, Path]:
    """Write ``NAME.key`` (private, mode 0600) and ``NAME.pub`` into `directory`; return both paths.

    Never overwrites: losing a signing key silently would orphan every device that trusts it. The private
    key is created with O_EXCL and mode 0600 so it is never, even briefly, readable by others.
    """
    if not _KEY_NAME.match(name):
        raise SigningError(f"key name {name!r} must be letters, digits, '_', '.' or '-' (no path separators)")
    directory = Path(directory)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} already exists; refusing to overwrite a key (choose another name)")
    directory.mkdir(parents=True, exist_ok=True)

    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_exclusive(private_path, private_pem, 0o600)
    try:
        _write_exclusive(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode`; fail if it exists (also when another process won the race)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise SigningError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, mode)  # the umask may have cleared bits; make the mode exactly what we asked for
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        if fd != -1:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{kind} key file not found: {path}") from None
    except OSError as exc:
        raise SigningError(f"cannot read {kind} key file {path}: {exc.strerror or exc}") from None


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key (as written by `generate_keypair`)."""
    path = Path(path)
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(
            f"{path}: the private key is encrypted; signing needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " (this is a public key; sign with the .key file)" if b"PUBLIC KEY" in data else ""
        raise SigningError(f"{path}: not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: is a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a PEM (SubjectPublicKeyInfo) Ed25519 public key (as written by `generate_keypair`)."""
    path = Path(path)
    data = _read_key_file(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        hint = " (this is a private key; trust the .pub file instead)" if b"PRIVATE KEY" in data else ""
        raise SigningError(f"{path}: not a PEM public key{hint}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: is a {type(key).__name__}, expected an Ed25519 public key")
    return key


def load_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> list[Ed25519PublicKey]:
    """Load public keys from files; a directory contributes every ``*.pub`` in it. Duplicates are dropped.

    A directory without any ``*.pub`` is an error: a device configured to trust "this folder" that trusts
    nothing would refuse every signed bundle with a confusing message later.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            files = sorted(entry.glob("*.pub"))
            if not files:
                raise SigningError(f"no *.pub files in trusted key directory {entry}")
        else:
            files = [entry]
        for file in files:
            key = load_public_key(file)
            keys.setdefault(key_id(key), key)
    return list(keys.values())


def sign_bytes(data: bytes, private_key: Ed25519PrivateKey) -> dict[str, str]:
    """Sign `data`; the result is what ``manifest.sig`` holds (as JSON)."""
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(bytes(data))).decode("ascii"),
    }


def verify_signature(
    data: bytes, signature: Mapping[str, Any], trusted_keys: Sequence[Ed25519PublicKey]
) -> str:
    """Check `signature` (as made by `sign_bytes`) over `data` against `trusted_keys`; return the key id.

    The key is picked by the key id the signature names, so the message can say *which* key signed when it
    is not trusted; the id itself is not trusted: a forged id only leads to a failed verification.
    """
    if not isinstance(signature, Mapping):
        raise SignatureError("signature is not a JSON object")
    algorithm = signature.get("algorithm")
    if algorithm != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {algorithm!r} (expected {ALGORITHM!r})")
    claimed, encoded = signature.get("key_id"), signature.get("signature")
    if not isinstance(claimed, str) or not isinstance(encoded, str):
        raise SignatureError("signature needs string fields 'key_id' and 'signature'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid base64") from None
    by_id = {key_id(key): key for key in trusted_keys}
    key = by_id.get(claimed)
    if key is None:
        trusted = ", ".join(sorted(by_id)) or "none"
        raise SignatureError(f"signed by key {claimed} which is not among the trusted keys ({trusted})")
    try:
        key.verify(raw, bytes(data))
    except InvalidSignature:
        raise SignatureError("signature does not match: the manifest was changed after signing") from None
    return claimed
