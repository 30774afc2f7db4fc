"""keygen, --sign-key, and inspect refusing a tampered bundle or an untrusted signer."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from converter.cli import main
from edge_runtime.bundle import BundleError, read_bundle
from edge_runtime.signing import load_trusted_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    assert main(["keygen", "release", "--dir", str(folder)]) == 0
    assert main(["keygen", "intruder", "--dir", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def signed_bundle(activity_sample, keys, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "activity.bundle"
    args = [str(activity_sample.onnx_path), "-o", str(out), "--target", "x86_64", "--card",
            str(activity_sample.card_path), "--eval", str(activity_sample.eval_path), "--quantize", "none",
            "--sign-key", str(keys / "release.key"), "--no-latency"]
    assert main(args) == 0
    return out


def rewrite_member(source: Path, target: Path, member: str, change) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, change(data) if info.filename == member else data)


def test_keygen_writes_a_private_key_only_its_owner_can_read(keys):
    assert stat.S_IMODE((keys / "release.key").stat().st_mode) == 0o600
    assert (keys / "release.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_keygen_refuses_to_overwrite(keys, capsys):
    assert main(["keygen", "release", "--dir", str(keys)]) == 2
    assert "exists" in capsys.readouterr().err


def test_signed_bundle_verifies_against_the_trusted_key(signed_bundle, keys, capsys):
    bundle = read_bundle(signed_bundle, trusted_keys=load_trusted_keys([keys / "release.pub"]))
    assert bundle.signature_status.startswith("verified")
    assert main(["inspect", str(signed_bundle), "--trusted-key", str(keys / "release.pub")]) == 0
    assert "verified" in capsys.readouterr().out


def test_untrusted_signer_is_refused(signed_bundle, keys, capsys):
    assert main(["inspect", str(signed_bundle), "--trusted-key", str(keys / "intruder.pub")]) == 2
    assert "not among the trusted keys" in capsys.readouterr().err


def test_tampered_model_is_detected(signed_bundle, tmp_path, capsys):
    tampered = tmp_path / "tampered.bundle"
    rewrite_member(signed_bundle, tampered, "model.onnx", lambda data: data[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(BundleError, match="checksum mismatch"):
        read_bundle(tampered)
    assert main(["inspect", str(tampered)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_tampered_manifest_breaks_the_signature(signed_bundle, keys, tmp_path, capsys):
    tampered = tmp_path / "relabelled.bundle"
    rewrite_member(signed_bundle, tampered, "manifest.json", lambda data: data.replace(b'"activity"', b'"activitx"'))
    assert main(["inspect", str(tampered), "--trusted-key", str(keys / "release.pub")]) == 2
    assert "signature" in capsys.readouterr().err
