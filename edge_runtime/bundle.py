"""The bundle: one zip archive that carries a model and everything needed to run and check it.

::

    manifest.json   what the model is, which board it was built for, sha256 of every other member
    manifest.sig    optional ed25519 signature over the exact bytes of manifest.json
    model.onnx      (or model.tflite)
    golden.npz      a golden input with its expected output
    model.rknn ...  optional: models compiled for an accelerator (`accelerated` in the manifest), each with its own
                    golden output; the device falls back from them to the model above

`read_bundle` checks everything (archive, manifest schema, checksums, unlisted members, size, signature)
before it returns, so a device can validate a new bundle completely before it replaces a working one.
`write_bundle` writes atomically, so a crash or error never leaves a half-written bundle behind.

Errors: `BundleError` for anything wrong with a bundle; `BundleSignatureError` (a BundleError *and* an
`edge_runtime.signing.SignatureError`) when its signature is refused. Catch BundleError to refuse a bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError, field_validator, model_validator

from edge_runtime.atomic import atomic_writer
from edge_runtime.card import Strict
from edge_runtime.signing import SignatureError, sign_bytes, verify_signature
from edge_runtime.yaml_source import describe_errors

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "SIGNATURE",
    "AcceleratedModel",
    "Bundle",
    "BundleError",
    "BundleSignatureError",
    "FileEntry",
    "GoldenSpec",
    "Manifest",
    "ModelFile",
    "Producer",
    "SignatureError",
    "Target",
    "TensorSpec",
    "check_member_name",
    "manifest_bytes",
    "pack_golden",
    "parse_manifest",
    "read_bundle",
    "sha256_hex",
    "utc_now",
    "write_bundle",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RESERVED = (MANIFEST, SIGNATURE)
DEFAULT_MAX_SIZE = 512 * 1024 * 1024
# A fixed timestamp for every archive member: the manifest carries the real creation time, and a fixed
# one makes the same inputs give a byte-identical bundle (ed25519 signatures are deterministic too).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(Exception):
    """A bundle that cannot be written or must not be loaded; the message says what is wrong."""


class BundleSignatureError(BundleError, SignatureError):
    """The bundle's signature was refused (also catchable as `edge_runtime.signing.SignatureError`)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    """Current time as ISO-8601 UTC with second precision, e.g. ``2025-01-31T12:00:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TensorSpec(Strict):
    """One model input or output. Shape entries are ints, symbolic names (``"batch"``) or None (unknown)."""

    name: str
    shape: list[int | str | None]
    dtype: str
    layout: str | None = None


class FileEntry(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ModelFile(Strict):
    path: str
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8", "mixed"]


class GoldenSpec(Strict):
    """Where the golden input/output lives and how closely a backend must reproduce it."""

    path: str = "golden.npz"
    rtol: float = Field(ge=0)
    atol: float = Field(ge=0)
    top1_must_match: bool = True


class AcceleratedModel(Strict):
    """A model compiled for one accelerator, carried next to the portable model (which stays the fallback): a
    `.rknn` for a Rockchip NPU, an Edge TPU-compiled TFLite. `golden` is its own expected output on the bundle's
    golden input (a simulator's); without one it must reproduce the portable model's."""

    path: str
    format: Literal["rknn", "edgetpu"]
    accelerator: str = Field(description="what it runs on, e.g. 'rk3588 NPU'")
    precision: Literal["fp32", "fp16", "int8", "mixed"]
    golden: GoldenSpec | None = None


class Producer(Strict):
    tool: str
    version: str


class Target(Strict):
    board: str
    arch: str
    config: dict[str, Any] = Field(description="the full board file the bundle was built for")


class Manifest(Strict):
    """Top level of ``manifest.json``. `files` is filled by `write_bundle`; leave it empty when building."""

    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    name: str
    version: str
    created: str = Field(default_factory=utc_now, description="ISO-8601 UTC")
    producer: Producer
    target: Target
    model: ModelFile
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    card: dict[str, Any] | None = None
    golden: GoldenSpec
    files: dict[str, FileEntry] = Field(default_factory=dict)
    verification: dict[str, Any] = Field(default_factory=dict)
    reference: dict[str, Any] = Field(default_factory=dict)
    accelerated: list[AcceleratedModel] = Field(default_factory=list)

    @field_validator("created")
    @classmethod
    def _utc_timestamp(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
        if parsed.utcoffset() is None or parsed.utcoffset().total_seconds() != 0:
            raise ValueError(f"timestamp must be UTC (end in 'Z' or '+00:00'): {value!r}")
        return value

    @field_validator("files")
    @classmethod
    def _safe_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            reason = unsafe_name_reason(name)
            if reason:
                raise ValueError(reason)
        return files

    @model_validator(mode="after")
    def _unique_tensor_names(self) -> Manifest:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [spec.name for spec in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} have duplicate names: {names}")
        return self


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical ``manifest.json`` bytes: sorted keys, indent 2, UTF-8, trailing newline.

    Deterministic so the same manifest always gives the same bytes (and the same signature). Pydantic's
    JSON mode writes NaN and infinity as null, so the result is strict JSON that any reader accepts.
    """
    data = manifest.model_dump(mode="json")
    if not data.get("accelerated"):  # a bundle without accelerator models stays readable by older runtimes
        data.pop("accelerated", None)
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def parse_manifest(data: bytes, source: str = MANIFEST) -> Manifest:
    """Parse and validate manifest bytes; a newer schema is refused with an upgrade hint, not a key list."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema {version} is newer than this runtime understands ({SCHEMA_VERSION}); "
            "upgrade edge-runtime"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = describe_errors(source, exc, Manifest, {})
        raise BundleError("invalid manifest:\n" + "\n".join(problems)) from None


def unsafe_name_reason(name: object) -> str | None:
    """Why `name` may not be a member (it could escape an extraction directory or shadow the manifest)."""
    if not isinstance(name, str) or not name:
        return f"invalid member name {name!r}"
    if name in RESERVED:
        return f"member name {name!r} is reserved for the bundle itself"
    absolute = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
    if absolute or "\\" in name or "\0" in name or any(part in ("", ".", "..") for part in name.split("/")):
        return f"unsafe member name {name!r}: must be a relative '/'-separated path without '..'"
    return None


def check_member_name(name: object) -> None:
    reason = unsafe_name_reason(name)
    if reason:
        raise BundleError(reason)


def pack_golden(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> bytes:
    """The ``golden.npz`` bytes for input and output arrays keyed by tensor name."""
    arrays = {f"input:{name}": np.asarray(value) for name, value in inputs.items()}
    arrays |= {f"output:{name}": np.asarray(value) for name, value in outputs.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_bundle(
    path: str | os.PathLike[str],
    manifest: Manifest,
    members: Mapping[str, bytes],
    signing_key: Ed25519PrivateKey | None = None,
) -> Manifest:
    """Write a bundle atomically and return the manifest as written (with `files` filled in).

    The archive is built in a temporary file next to `path`, fsynced and renamed over `path`, so readers
    see either the old bundle or the complete new one; on any error the temporary file is removed.
    """
    path = Path(path)
    files: dict[str, FileEntry] = {}
    for name in members:
        check_member_name(name)
        data = members[name]
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"member {name!r}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        files[name] = FileEntry(sha256=sha256_hex(data), size=len(data))
    for role, needed in _roles(manifest):
        if needed not in members:
            raise BundleError(f"the manifest's {role} file {needed!r} is not among the members")

    plain = _plain({**manifest.model_dump(), "files": {}}) | {"files": files}
    manifest_json = manifest_bytes(Manifest.model_validate(plain))
    final = parse_manifest(manifest_json)  # exactly what `read_bundle` will see (NaN has become null)
    entries = [(MANIFEST, manifest_json)]
    if signing_key is not None:
        signature = json.dumps(sign_bytes(manifest_json, signing_key), sort_keys=True, indent=2) + "\n"
        entries.append((SIGNATURE, signature.encode("utf-8")))
    entries += [(name, bytes(members[name])) for name in sorted(members)]

    # mode 0644: a bundle is not a secret (a temp file is made 0600)
    with atomic_writer(path, mode=0o644) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return final


def _roles(manifest: Manifest) -> list[tuple[str, str]]:
    """Every member the manifest names for a purpose: the model, the golden file, accelerator models and theirs."""
    roles = [("model", manifest.model.path), ("golden", manifest.golden.path)]
    for entry in manifest.accelerated:
        roles.append((f"{entry.format} model", entry.path))
        if entry.golden is not None:
            roles.append((f"{entry.format} golden", entry.golden.path))
    return roles


def _plain(value: Any) -> Any:
    """Turn numpy scalars and arrays (typical in `verification`/`reference` metrics) into JSON types."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


class Bundle:
    """A bundle that passed every check; members are held in memory (bundles are small)."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        members: dict[str, bytes],
        signature_status: str,
        signer_key_id: str | None,
    ):
        self.path = path
        self.manifest = manifest
        self.signature_status = signature_status
        self.signer_key_id = signer_key_id
        self._members = members

    def __repr__(self) -> str:
        manifest = self.manifest
        return f"Bundle({str(self.path)!r}, {manifest.name} {manifest.version}, {self.signature_status})"

    @property
    def names(self) -> list[str]:
        """Member names listed in the manifest (manifest.json and manifest.sig excluded)."""
        return sorted(self._members)

    def read(self, name: str) -> bytes:
        try:
            return self._members[name]
        except KeyError:
            raise BundleError(f"{self.path}: no member {name!r}") from None

    def model_bytes(self) -> bytes:
        return self.read(self.manifest.model.path)

    def golden(self, spec: GoldenSpec | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The golden (inputs, outputs), each keyed by tensor name: the manifest's, or those `spec` points at (an
        accelerator model's)."""
        member = (spec or self.manifest.golden).path
        source = f"{self.path}:{member}"
        try:
            with np.load(io.BytesIO(self.read(member)), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise BundleError(f"{source}: not a readable .npz file ({exc})") from None
        inputs: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            kind, _, name = key.partition(":")
            if kind == "input" and name:
                inputs[name] = value
            elif kind == "output" and name:
                outputs[name] = value
            else:
                raise BundleError(
                    f"{source}: unexpected array {key!r} (keys are 'input:<name>'/'output:<name>')"
                )
        return inputs, outputs


def read_bundle(
    path: str | os.PathLike[str],
    trusted_keys: Sequence[Ed25519PublicKey] | None = None,
    require_signature: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Bundle:
    """Open and fully check a bundle; raise BundleError (or BundleSignatureError) if anything is off.

    Signature policy: with `trusted_keys` (non-empty), a present ``manifest.sig`` must verify against one of
    them; `require_signature` additionally refuses unsigned bundles (and needs `trusted_keys`, since a
    signature nobody checks proves nothing). Without trusted keys a signature is reported, not checked.
    `max_size` caps the total uncompressed size so a zip bomb is refused before it is inflated.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"bundle not found: {path}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise BundleError(f"not a bundle (not a zip archive): {path}") from None
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from None
    with archive:
        contents = _read_members(path, archive, max_size)

    manifest_json = contents.pop(MANIFEST, None)
    if manifest_json is None:
        raise BundleError(f"not a bundle: {path} has no {MANIFEST}")
    signature_json = contents.pop(SIGNATURE, None)
    status, signer = _check_signature(path, manifest_json, signature_json, trusted_keys, require_signature)

    manifest = parse_manifest(manifest_json, f"{path}:{MANIFEST}")
    _check_files(path, manifest, contents)
    return Bundle(path, manifest, contents, status, signer)


def _read_members(path: Path, archive: zipfile.ZipFile, max_size: int) -> dict[str, bytes]:
    """Read every member after checking names, duplicates and the declared total size."""
    infos = archive.infolist()
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise BundleError(f"{path}: member {info.filename!r} appears twice")
        seen.add(info.filename)
        if info.filename not in RESERVED:
            try:
                check_member_name(info.filename)
            except BundleError as exc:
                raise BundleError(f"{path}: {exc}") from None
    total = sum(info.file_size for info in infos)
    if total > max_size:
        raise BundleError(
            f"{path}: uncompressed size {total} bytes exceeds the limit of {max_size} bytes (a zip bomb?)"
        )
    contents: dict[str, bytes] = {}
    for info in infos:
        try:
            with archive.open(info) as member:
                data = member.read(info.file_size + 1)  # never inflate more than the header promised
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise BundleError(
                f"{path}: {info.filename}: cannot be read ({exc}): the bundle is corrupted"
            ) from None
        if len(data) != info.file_size:
            raise BundleError(f"{path}: {info.filename}: size does not match the zip header: corrupted")
        contents[info.filename] = data
    return contents


def _check_signature(
    path: Path,
    manifest_json: bytes,
    signature_json: bytes | None,
    trusted_keys: Sequence[Ed25519PublicKey] | None,
    require_signature: bool,
) -> tuple[str, str | None]:
    """Apply the signature policy to the raw manifest bytes, before they are trusted enough to parse."""
    if signature_json is None:
        if require_signature:
            raise BundleSignatureError(f"{path}: bundle is not signed (a signature is required)")
        return "unsigned", None
    if not trusted_keys:
        if require_signature:
            raise BundleSignatureError(
                f"{path}: a signature is required but no trusted keys are configured to verify it"
            )
        return "signed, not verified (no trusted keys configured)", None
    try:
        signature = json.loads(signature_json.decode("utf-8"))
        signer = verify_signature(manifest_json, signature, trusted_keys)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleSignatureError(f"{path}: {SIGNATURE} is not valid JSON") from None
    except SignatureError as exc:
        raise BundleSignatureError(f"{path}: {exc}") from None
    return f"verified: key {signer}", signer


def _check_files(path: Path, manifest: Manifest, contents: Mapping[str, bytes]) -> None:
    """Every listed member present with its checksum, nothing unlisted, model and golden listed."""
    unlisted = sorted(set(contents) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{path}: members not listed in the manifest: {', '.join(unlisted)}")
    for name, entry in sorted(manifest.files.items()):
        if name not in contents:
            raise BundleError(f"{path}: {name}: listed in the manifest but missing from the bundle")
        data = contents[name]
        actual = sha256_hex(data)
        if actual != entry.sha256 or len(data) != entry.size:
            raise BundleError(
                f"{path}: {name}: checksum mismatch (expected {entry.sha256}, got {actual}): "
                "the bundle was modified or corrupted"
            )
    for role, needed in _roles(manifest):
        if needed not in manifest.files:
            raise BundleError(f"{path}: the {role} file {needed!r} is not listed in the manifest's files")
