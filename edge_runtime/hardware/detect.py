"""Which board this is, and from what: the `detect` sections of the board files matched against the machine.

A board file says how it is recognised (`Detection`): strings of the device tree's `compatible` (Raspberry Pi 4
`brcm,bcm2711`, Pi 5 `brcm,bcm2712`, Jetson Orin `nvidia,tegra234`, Nano `nvidia,tegra210`, RK3588
`rockchip,rk3588`), the L4T release of /etc/nv_tegra_release it is written for (R36 = JetPack 6), accelerator
device nodes (`/dev/apex_0`) or USB ids (Coral: `1a6e:089a` before its firmware is loaded, `18d1:9302` after).
Only boards of this machine's architecture are candidates. An accelerator match beats a device-tree match (a Pi
with a Coral stick should use the Edge TPU board file), which beats the architecture's fallback board. Adding a
board is adding a file.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.board import Accelerator, Board, all_boards, load_board
from edge_runtime.hardware.sysfs import read_strings, read_text, under

DEVICE_TREE = "/proc/device-tree"
TEGRA_RELEASE = "/etc/nv_tegra_release"
USB_DEVICES = "/sys/bus/usb/devices"
#: L4T major release -> JetPack
JETPACK = {"R32": "JetPack 4", "R34": "JetPack 5 (developer preview)", "R35": "JetPack 5", "R36": "JetPack 6"}

# How strongly a kind of evidence identifies a board.
_ACCELERATOR, _DEVICE_TREE, _FALLBACK = 3, 2, 1


@dataclass(frozen=True)
class Machine:
    """What the machine says about itself, read once under `root` (a recorded tree in tests)."""

    root: Path
    arch: str
    model: str | None
    compatible: tuple[str, ...]
    tegra_release: str | None  # "R36", from the first line of /etc/nv_tegra_release
    tegra_line: str | None
    usb_ids: tuple[str, ...]  # "vendor:product", lower case

    def has(self, device: str) -> bool:
        return under(self.root, device).exists()


def _usb_ids(root: Path) -> tuple[str, ...]:
    found = []
    for device in sorted(under(root, USB_DEVICES).glob("*")):
        vendor, product = read_text(device / "idVendor"), read_text(device / "idProduct")
        if vendor and product:
            found.append(f"{vendor.lower()}:{product.lower()}")
    return tuple(found)


def read_machine(root: str | Path = "/", arch: str | None = None) -> Machine:
    """Read the device tree, the L4T release and the USB ids under `root`; `arch` defaults to this machine's."""
    root = Path(root)
    tegra_line = read_text(under(root, TEGRA_RELEASE))
    release = re.search(r"\bR(\d+)\b", tegra_line or "")
    return Machine(
        root=root,
        arch=arch or platform.machine(),
        model=read_text(under(root, f"{DEVICE_TREE}/model")),
        compatible=tuple(read_strings(under(root, f"{DEVICE_TREE}/compatible"))),
        tegra_release=f"R{release.group(1)}" if release else None,
        tegra_line=tegra_line.splitlines()[0] if tegra_line else None,
        usb_ids=_usb_ids(root),
    )


def _matches(board: Board, machine: Machine) -> tuple[int, list[str]]:
    """How strongly `board` matches and the evidence, e.g. (2, ["compatible brcm,bcm2711 in /proc/device-tree"])."""
    rules = board.detect
    accelerators = [f"USB device {usb_id}" for usb_id in rules.usb_ids if usb_id.lower() in machine.usb_ids]
    accelerators += [device for device in rules.devices if machine.has(device)]
    if accelerators:
        return _ACCELERATOR, accelerators
    compatible = [value for value in rules.compatible if value in machine.compatible]
    if compatible:
        evidence = [f"compatible {', '.join(compatible)} in {DEVICE_TREE}/compatible"]
        if machine.model:
            evidence.append(f"model '{machine.model}'")
        if machine.tegra_release:
            evidence.append(f"{machine.tegra_release} in {TEGRA_RELEASE}")
        return _DEVICE_TREE, evidence
    if rules.fallback:
        return _FALLBACK, [f"no other board file matches this {machine.arch} machine"]
    return 0, []


@dataclass
class Detection:
    """The board the daemon uses, why, and what else the machine said."""

    board: Board
    evidence: list[str]
    named: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        how = "named in the config" if self.named else "detected: " + "; ".join(self.evidence)
        return f"board {self.board.name} ({how})"

    def as_dict(self) -> dict:
        return {"name": self.board.name, "named": self.named, "evidence": self.evidence, "notes": self.notes}


def _jetpack_notes(board: Board, machine: Machine) -> list[str]:
    release = machine.tegra_release
    wanted = board.detect.tegra_release
    if not wanted or release in wanted:
        return []
    if release is None:
        return [f"no {TEGRA_RELEASE}: {board.name} is written for L4T {', '.join(wanted)}"]
    return [
        f"L4T {release} ({JETPACK.get(release, 'unknown JetPack')}) found, but {board.name} is written for "
        f"{', '.join(f'{r} ({JETPACK.get(r, r)})' for r in wanted)}: NVIDIA's onnxruntime-gpu wheels are "
        "specific to one JetPack"
    ]


def detect_board(machine: Machine, boards: list[Board] | None = None) -> Detection:
    """The best-matching board of this machine's architecture (see the module docstring for the order)."""
    boards = all_boards() if boards is None else boards
    scored = []
    for board in boards:
        if board.arch != machine.arch:
            continue
        strength, evidence = _matches(board, machine)
        if strength:
            scored.append((strength, board, evidence))
    if not scored:
        raise LookupError(f"no board file for architecture {machine.arch}: name one with `board:` in the config")
    scored.sort(key=lambda item: -item[0])  # stable: boards of equal strength stay in name order
    _, board, evidence = scored[0]
    notes = [f"{other.name} also matches ({'; '.join(why)}); {board.name} is more specific"
             for strength, other, why in scored[1:] if strength > _FALLBACK]
    notes += _jetpack_notes(board, machine)
    notes += _unmatched_accelerators(machine, board, boards)
    return Detection(board, evidence, notes=notes)


def _unmatched_accelerators(machine: Machine, chosen: Board, boards: list[Board]) -> list[str]:
    """Accelerators of other boards' files that are plugged in here but not used by the chosen board."""
    notes = []
    for board in boards:
        if board.name == chosen.name:
            continue
        for usb_id in board.detect.usb_ids:
            if usb_id.lower() in machine.usb_ids and board.arch != machine.arch:
                notes.append(f"USB device {usb_id} ({board.name}) is plugged in, but {board.name} is for {board.arch}")
    return notes


def resolve_board(named: str | None, root: str | Path = "/", arch: str | None = None) -> Detection:
    """The board the config names (checked against what the machine looks like), or else the detected one."""
    machine = read_machine(root, arch)
    if named is None:
        return detect_board(machine)
    board = load_board(named)
    detection = Detection(board, ["named in the config"], named=True)
    if board.arch != machine.arch:
        detection.notes.append(f"{board.name} is an {board.arch} board but this machine is {machine.arch}")
    try:
        looks_like = detect_board(machine)
    except LookupError:
        return detection
    if looks_like.board.name != board.name and not looks_like.board.detect.fallback:
        detection.notes.append(
            f"this machine looks like {looks_like.board.name} ({'; '.join(looks_like.evidence)})"
        )
    return detection


def accelerators_present(board: Board, machine: Machine) -> list[tuple[Accelerator, str | None]]:
    """Each of the board's accelerators with the device node or USB id that shows it, or None when absent."""
    found = []
    for accelerator in board.accelerators:
        evidence = next((device for device in accelerator.devices if machine.has(device)), None)
        evidence = evidence or next(
            (f"USB {usb_id}" for usb_id in accelerator.usb_ids if usb_id.lower() in machine.usb_ids), None
        )
        found.append((accelerator, evidence))
    return found
