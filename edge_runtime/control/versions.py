"""What each model slot ran last, kept across restarts: a device never goes back to an older bundle by accident
or by replay.

A bundle once signed stays signed forever: without this, whoever captured an old signed bundle (an old retained
deploy, a backup) could roll a device back to a model with a known flaw. So each slot (the model's name on the
device) remembers the newest bundle it accepted: its name, version, build time (`created`, inside the signed
manifest) and sha256, in `installed.json` next to the spool, written atomically after every install.

Older means: the version is lower when both versions are dotted numbers (`3` < `4`, `1.10` > `1.9`), or, when the
versions are equal or not comparable, the bundle was built earlier. The same bundle again (a `reload` of the
configured file) is not older. Only a signed command with `allow_downgrade: true` installs an older bundle, and the
floor then moves down with it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from edge_runtime import atomic
from edge_runtime.bundle import Bundle, BundleError

log = logging.getLogger("edge_runtime.models")

_DOTTED = re.compile(r"^v?(\d+(?:\.\d+)*)$")


class RollbackRefused(BundleError):
    """A bundle older than the one the slot already ran."""


def _numbers(version: str) -> tuple[int, ...] | None:
    match = _DOTTED.match(version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def older(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether `candidate` is older than `current` (both as `describe_bundle` makes them)."""
    mine, theirs = _numbers(str(candidate.get("version", ""))), _numbers(str(current.get("version", "")))
    if mine is not None and theirs is not None and mine != theirs:
        width = max(len(mine), len(theirs))
        return mine + (0,) * (width - len(mine)) < theirs + (0,) * (width - len(theirs))
    return str(candidate.get("created") or "") < str(current.get("created") or "")


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    """What is remembered of a bundle (a stand-in without some manifest fields describes what it has)."""
    manifest = bundle.manifest
    return {"name": getattr(manifest, "name", None), "version": str(getattr(manifest, "version", "")),
            "created": getattr(manifest, "created", None), "sha256": manifest_digest(bundle)}


def manifest_digest(bundle: Bundle) -> str:
    """What identifies a bundle's content: the sha256 of its model member (the manifest lists it, signed)."""
    manifest = bundle.manifest
    files, model = getattr(manifest, "files", None), getattr(manifest, "model", None)
    entry = files.get(model.path) if files is not None and model is not None else None
    return entry.sha256 if entry is not None else ""


class InstalledVersions:
    """The newest bundle accepted per slot; see the module docstring. Thread-safe."""

    def __init__(self, path: Path | None):
        self.path = path
        self._slots: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path is not None:
            try:
                document = json.loads(path.read_text())
                self._slots = {str(k): dict(v) for k, v in document["slots"].items()}
            except FileNotFoundError:
                pass
            except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                raise BundleError(f"{path} is unreadable ({exc}): it records which bundle versions this device "
                                  "ran; fix or delete it (deleting it allows a rollback once)") from None

    def current(self, slot: str) -> dict[str, Any] | None:
        with self._lock:
            return self._slots.get(slot)

    def check(self, slot: str, bundle: Bundle, allow_downgrade: bool = False) -> None:
        """RollbackRefused if `bundle` is older than what `slot` ran, unless `allow_downgrade`."""
        current = self.current(slot)
        candidate = describe_bundle(bundle)
        if current is None or not older(candidate, current):
            return
        if allow_downgrade:
            log.warning("model %s: downgrade from %s %s (built %s) to %s %s (built %s), allowed by a signed command",
                        slot, current.get("name"), current.get("version"), current.get("created"),
                        candidate["name"], candidate["version"], candidate["created"])
            return
        raise RollbackRefused(
            f"{bundle.path}: {candidate['name']} {candidate['version']} (built {candidate['created']}) is older than "
            f"{current.get('name')} {current.get('version')} (built {current.get('created')}), which model "
            f"{slot} already ran: refusing a rollback (edge-fleet deploy --allow-downgrade permits it; the versions "
            f"run so far are in {self.path or 'memory'})")

    def check_claimed(self, slot: str, version: str | None, created: str | None, allow_downgrade: bool) -> None:
        """The same check on what a signed deploy request says it brings, before anything is downloaded."""
        current = self.current(slot)
        if current is None or allow_downgrade or version is None:
            return
        candidate = {"version": version, "created": created or "9999", "sha256": None}
        if older(candidate, current):
            raise RollbackRefused(f"the request brings {version} (built {created}), older than "
                                  f"{current.get('version')} (built {current.get('created')}) which model {slot} "
                                  "already ran: refusing a rollback (edge-fleet deploy --allow-downgrade permits it)")

    def record(self, slot: str, bundle: Bundle) -> None:
        with self._lock:
            self._slots[slot] = describe_bundle(bundle)
            if self.path is None:
                return
            data = json.dumps({"slots": self._slots}, indent=1, sort_keys=True).encode()
        try:
            atomic.write_bytes(self.path, data)
        except OSError:
            log.exception("cannot record the installed versions in %s", self.path)
