"""Running `systemd-analyze verify` and `security --offline=yes` on a unit file, as the tests of the units do.

`verify` fails on a unit whose ExecStart= program does not exist, so the unit is checked inside a root directory
(`--root`) that holds a copy of this machine's systemd units and an executable stand-in at every Exec path.
It exits 0 on warnings (an unknown key, a bad value): every line it writes to stderr counts as a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: `make firmware-tools` installs it (Debian package systemd)"
    return found


def unit_root(unit: Path, where: Path) -> Path:
    """A root with the system's units, this unit under /etc/systemd/system, and its Exec programs."""
    shutil.copytree(SYSTEM_UNITS, where / "usr/lib/systemd/system", symlinks=True)
    (where / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, where / "etc/systemd/system" / unit.name)
    for program in re.findall(r"^Exec\w*=[-@:+!]*(/\S+)", unit.read_text(), re.MULTILINE):
        stand_in = where / program.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    return where


def verify(unit: Path, where: Path) -> subprocess.CompletedProcess:
    root = unit_root(unit, where)
    return subprocess.run([analyze(), "verify", f"--root={root}", unit.name], capture_output=True, text=True)


def exposure(unit: Path, where: Path) -> tuple[float, str]:
    """The overall exposure level and its word (OK, MEDIUM, EXPOSED, UNSAFE)."""
    root = unit_root(unit, where)
    result = subprocess.run([analyze(), "security", "--offline=yes", f"--root={root}", "--no-pager", unit.name],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1)), match.group(2)


def recorded_exposure(readme: Path, unit_name: str) -> tuple[float, str]:
    """The score the README's table gives for `unit_name`."""
    for line in readme.read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].endswith(unit_name):
            score, word = cells[1].split()
            return float(score), word
    raise AssertionError(f"{readme} records no exposure for {unit_name}")
