"""The bundle: one zip archive that carries a model and everything needed to run and check it.

::

    manifest.json   what the model is, which board it was built for, sha256 of every other member
    manifest.sig    optional ed25519 signature over the exact bytes of manifest.json
    model.onnx      (or model.tflite)
    golden.npz      a golden input with its expected output
    model.rknn ...  optional: models compiled for an accelerator (`accelerated` in the manifest), each with its own
                    golden output; the device falls back from them to the model above

`read_bundle` checks everything (archive, manifest schema, checksums, unlisted members, size, signature)
before it returns, so a device can validate a new bundle completely before it replaces a working one. Trust
comes before memory: only `manifest.json` and `manifest.sig` (both small, capped) are read before the signature is
checked; then each member is streamed and hashed against the size and sha256 the (now trusted) manifest lists, and
never read past that size, so a zip bomb or an unsigned bundle costs the device a few kilobytes, not gigabytes.
With trusted keys, an unsigned bundle is always refused: deleting `manifest.sig` cannot turn a refusal into an
acceptance. `golden.npz` is loaded only after its array headers were checked (`edge_runtime.npz`).
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
from zlib import error as zlib_error

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError, field_validator, model_validator

from edge_runtime.atomic import atomic_writer
from edge_runtime.card import Strict
from edge_runtime.npz import NpzError, load_npz
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
#: manifest.json is read before it is trusted: it must be small (reference statistics included, a few 100 KB)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
#: members are inflated and hashed this much at a time
_PIECE = 1024 * 1024
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
    except RecursionError:
        raise BundleError(f"{source}: JSON nested too deeply") from None
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
    except RecursionError:
        raise BundleError(f"{source}: nested too deeply") from None


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
        self._released: set[str] = set()

    def __repr__(self) -> str:
        manifest = self.manifest
        return f"Bundle({str(self.path)!r}, {manifest.name} {manifest.version}, {self.signature_status})"

    @property
    def names(self) -> list[str]:
        """Member names listed in the manifest (manifest.json and manifest.sig excluded)."""
        return sorted(self._members)

    def read(self, name: str) -> bytes:
        if name in self._released:
            raise BundleError(f"{self.path}: member {name!r} was released once the model was loaded (read the bundle "
                              "again for its bytes)")
        try:
            return self._members[name]
        except KeyError:
            raise BundleError(f"{self.path}: no member {name!r}") from None

    def release(self, *names: str) -> None:
        """Drop the bytes of these members: a loaded model's bytes live on in its backend (a parsed session, or an
        interpreter that keeps its own reference), so the bundle holding them too only costs memory, for as long
        as the model is served. The manifest and the other members (the golden output) stay readable."""
        for name in names:
            if name in self._members:
                self._members[name] = b""
                self._released.add(name)

    def model_bytes(self) -> bytes:
        return self.read(self.manifest.model.path)

    def golden(self, spec: GoldenSpec | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The golden (inputs, outputs), each keyed by tensor name: the manifest's, or those `spec` points at (an
        accelerator model's)."""
        member = (spec or self.manifest.golden).path
        source = f"{self.path}:{member}"
        data = self.read(member)
        try:
            # the arrays are in the archive uncompressed (np.savez): they cannot take more than the member's bytes
            arrays = load_npz(data, max_bytes=max(len(data), 1024))
        except NpzError as exc:
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

    Signature policy: with `trusted_keys` (non-empty), the bundle must be signed by one of them (an unsigned one
    is refused whatever `require_signature` says); `require_signature` without trusted keys refuses everything,
    since a signature nobody checks proves nothing. Without either, a signature is reported, not checked.
    `max_size` caps the total size of the members, checked on the sizes declared before anything is inflated.
    """
    path = Path(path)
    require_signature = require_signature or bool(trusted_keys)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"bundle not found: {path}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise BundleError(f"not a bundle (not a zip archive): {path}") from None
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from None
    with archive:
        infos = _directory(path, archive)
        if MANIFEST not in infos:
            raise BundleError(f"not a bundle: {path} has no {MANIFEST}")
        manifest_json = _read_capped(path, archive, infos[MANIFEST], MAX_MANIFEST_BYTES)
        signature_json = (_read_capped(path, archive, infos[SIGNATURE], MAX_SIGNATURE_BYTES)
                          if SIGNATURE in infos else None)
        status, signer = _check_signature(path, manifest_json, signature_json, trusted_keys, require_signature)
        manifest = parse_manifest(manifest_json, f"{path}:{MANIFEST}")
        _check_listing(path, manifest, infos, max_size)
        contents = {name: _read_member(path, archive, infos[name], entry)
                    for name, entry in sorted(manifest.files.items())}
    return Bundle(path, manifest, contents, status, signer)


def _directory(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The members by name, after checking names and duplicates (nothing is inflated)."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in infos:
            raise BundleError(f"{path}: member {info.filename!r} appears twice")
        if info.filename not in RESERVED:
            try:
                check_member_name(info.filename)
            except BundleError as exc:
                raise BundleError(f"{path}: {exc}") from None
        infos[info.filename] = info
    return infos


def _read_capped(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """A small member read before anything is trusted: refused if its header says it is larger than `cap`."""
    if info.file_size > cap:
        raise BundleError(f"{path}: {info.filename} is {info.file_size} bytes, more than the {cap} a bundle's "
                          f"{info.filename} may take")
    return _inflate(path, archive, info, info.file_size, None)


def _check_listing(path: Path, manifest: Manifest, infos: Mapping[str, zipfile.ZipInfo], max_size: int) -> None:
    """Every listed member present with the size the manifest says, nothing unlisted, model and golden listed,
    and the total under `max_size`: all from the directory, before a byte of a member is inflated."""
    members = set(infos) - set(RESERVED)
    unlisted = sorted(members - set(manifest.files))
    if unlisted:
        raise BundleError(f"{path}: members not listed in the manifest: {', '.join(unlisted)}")
    for name, entry in sorted(manifest.files.items()):
        if name not in infos:
            raise BundleError(f"{path}: {name}: listed in the manifest but missing from the bundle")
        if infos[name].file_size != entry.size:
            raise BundleError(f"{path}: {name}: the archive says {infos[name].file_size} bytes, the manifest "
                              f"{entry.size}: the bundle was modified or corrupted")
    for role, needed in _roles(manifest):
        if needed not in manifest.files:
            raise BundleError(f"{path}: the {role} file {needed!r} is not listed in the manifest's files")
    total = sum(entry.size for entry in manifest.files.values())
    if total > max_size:
        raise BundleError(f"{path}: uncompressed size {total} bytes exceeds the limit of {max_size} bytes "
                          "(security.max_bundle_bytes; a zip bomb?)")


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, entry: FileEntry) -> bytes:
    return _inflate(path, archive, info, entry.size, entry.sha256)


def _inflate(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, sha256: str | None) -> bytes:
    """Stream one member, hashing as it goes, never reading more than `size` bytes (plus one, to notice)."""
    digest = hashlib.sha256()
    pieces: list[bytes] = []
    read = 0
    try:
        with archive.open(info) as member:
            while read <= size:
                piece = member.read(min(_PIECE, size + 1 - read))
                if not piece:
                    break
                read += len(piece)
                digest.update(piece)
                pieces.append(piece)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, ValueError, zlib_error) as exc:
        raise BundleError(f"{path}: {info.filename}: cannot be read ({exc}): the bundle is corrupted") from None
    if read != size:
        raise BundleError(f"{path}: {info.filename}: size does not match ({read} bytes read, {size} expected): "
                          "corrupted")
    if sha256 is not None and digest.hexdigest() != sha256:
        raise BundleError(f"{path}: {info.filename}: checksum mismatch (expected {sha256}, got "
                          f"{digest.hexdigest()}): the bundle was modified or corrupted")
    return b"".join(pieces)


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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BundleSignatureError(f"{path}: {SIGNATURE} is not valid JSON") from None
    except SignatureError as exc:
        raise BundleSignatureError(f"{path}: {exc}") from None
    return f"verified: key {signer}", signer
