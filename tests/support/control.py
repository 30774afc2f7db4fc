"""Control keys and signed envelopes for tests: what `edge-fleet command` and `edge-fleet deploy` send, made with
the fleet tool's own signer (`edge_fleet.signer.ControlSigner`), plus the device-side authority to check them."""

from __future__ import annotations

from pathlib import Path

from edge_fleet.signer import ControlSigner
from edge_runtime.contract import DeviceTopics
from edge_runtime.control.authority import ControlAuthority
from edge_runtime.control.nonces import NonceCache
from edge_runtime.signing import generate_keypair, load_public_key


class ControlKey:
    """A control key pair in `folder` (`NAME.key`, `NAME.pub`) and its signer."""

    def __init__(self, folder: Path, name: str = "fleet-control"):
        folder.mkdir(parents=True, exist_ok=True)
        private, public = folder / f"{name}.key", folder / f"{name}.pub"
        if not private.exists():
            generate_keypair(name, folder)
        self.private, self.public = private, public
        self.signer = ControlSigner(private)

    def sign(self, action: str, body: dict | None = None, *, device: str | None = "dev-1", group: str | None = None,
             prefix: str = "edge", lifetime_s: float = 300.0) -> bytes:
        return self.signer.sign(action, body or {}, prefix=prefix, device=device, group=group, lifetime_s=lifetime_s)

    def command(self, name: str, body: dict | None = None, **kwargs) -> bytes:
        return self.sign(f"cmd/{name}", body, **kwargs)

    def deploy(self, body: dict, **kwargs) -> bytes:
        kwargs.setdefault("lifetime_s", 3600.0)
        return self.sign("deploy/request", body, **kwargs)

    def authority(self, device: str = "dev-1", group: str | None = None, nonces: Path | None = None,
                  **kwargs) -> ControlAuthority:
        return ControlAuthority([load_public_key(self.public)], DeviceTopics("edge", device), group,
                                NonceCache(nonces), **kwargs)


def resign(source: Path, out: Path, key: Path | None, *, version: str | None = None,
           created: str | None = None) -> Path:
    """`source`'s members under a manifest with another version/build time, signed by the private `key` (None:
    unsigned), written by the one bundle writer: how a release and its successor look, without converting."""
    from edge_runtime.bundle import read_bundle, write_bundle
    from edge_runtime.signing import load_private_key

    bundle = read_bundle(source)
    changes = {key_: value for key_, value in (("version", version), ("created", created)) if value is not None}
    manifest = bundle.manifest.model_copy(update={**changes, "files": {}})
    members = {name: bundle.read(name) for name in bundle.names}
    write_bundle(out, manifest, members, load_private_key(key) if key is not None else None)
    return out
