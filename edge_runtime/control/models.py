"""`RunningModels`: the one owner of the running models.

It holds the model workers and is the only code that changes which model a worker runs: `install` loads a
bundle (checksums, signature, golden output on this device's backend), refuses it if it is older than what the
slot ran (`InstalledVersions`, unless a signed command allows a downgrade), swaps it in between two batches, and
with `write_over_configured` also writes it over the configured bundle path so a restart runs it. `reload` and
deployments both go through it, one install at a time. After every install it calls `on_change` (the daemon
republishes its retained status); `describe` is what that status lists.

Why one owner: the swap used to live in the command module with the deploy receiver importing it from there, and
both reached through the daemon into its workers' configs and its loader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.atomic import stage_copy
from edge_runtime.config import ModelConfig
from edge_runtime.control.seams import BundleLoader
from edge_runtime.control.versions import InstalledVersions
from edge_runtime.model_loader import LoadedModel

if TYPE_CHECKING:
    from edge_runtime.model_worker import ModelWorker

log = logging.getLogger("edge_runtime.models")


class RunningModels:
    """The model workers by name, and the installs that swap their models; see the module docstring."""

    def __init__(self, load: BundleLoader, require_signature: bool = False,
                 on_change: Callable[[], None] | None = None, versions: InstalledVersions | None = None):
        self._load = load
        # the policy for local files: security.require_signature, forced on when trusted keys are configured
        self.require_signature = require_signature
        self.on_change = on_change
        self.versions = versions if versions is not None else InstalledVersions(None)
        self.workers: dict[str, ModelWorker] = {}
        #: one install (reload or deploy) at a time: both swap a worker's model, and a deploy also replaces its file
        self._install_lock = threading.Lock()

    # -- the set of models --------------------------------------------------------------------------------------
    def load(self, config: ModelConfig, bundle: Path | None = None,
             require_signature: bool | None = None) -> LoadedModel:
        """Load, verify and warm up `bundle` (default: the configured one); `require_signature` overrides the
        policy for local files (a deployment over MQTT is stricter)."""
        policy = self.require_signature if require_signature is None else require_signature
        return self._load(config, bundle or config.bundle, policy)

    def add(self, worker: ModelWorker) -> None:
        """A model that starts with the daemon; refused (RollbackRefused) if it is older than what its slot ran."""
        if worker.name in self.workers:
            raise ValueError(f"two models are named '{worker.name}': give one of them a `name`")
        bundle = worker.model.bundle
        self.versions.check(worker.name, bundle)
        self.versions.record(worker.name, bundle)
        self.workers[worker.name] = worker

    def __contains__(self, name: object) -> bool:
        return name in self.workers

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.workers))

    def __len__(self) -> int:
        return len(self.workers)

    def resolve(self, name: str | None) -> str:
        """The running model a reload or deployment is for: `name`, or the only one; ValueError says what exists."""
        if name is None:
            if len(self.workers) != 1:
                raise ValueError(f"say which model: {', '.join(self.workers)}")
            return next(iter(self.workers))
        if name not in self.workers:
            raise ValueError(f"no model '{name}' (models: {', '.join(self.workers)})")
        return name

    def configured_bundle(self, name: str) -> Path:
        """The bundle path the config gives model `name` (what a restart loads)."""
        return self.workers[name].config.bundle

    def check_version(self, name: str, version: str | None, created: str | None, allow_downgrade: bool) -> None:
        """RollbackRefused if a bundle of this version and build time would be a rollback for model `name` (a
        deployment asks before it downloads anything)."""
        self.versions.check_claimed(name, version, created, allow_downgrade)

    def describe(self) -> list[dict]:
        """Every running model, for the status document and the `info` command."""
        return [worker.describe() for worker in list(self.workers.values())]

    # -- installing -------------------------------------------------------------------------------------------
    def install(self, name: str, bundle: Path, *, write_over_configured: bool = False,
                require_signature: bool | None = None, allow_downgrade: bool = False) -> LoadedModel:
        """Load `bundle`, swap it in for model `name`, then call `on_change`.

        Any failure raises and leaves the running model (and its file) alone. With `write_over_configured`, the
        bundle is also written over the configured path (atomically): the temp copy is made before the swap (a
        full disk fails before anything changed) and renamed after it; if the rename fails, the old bundle is
        loaded back.
        """
        with self._install_lock:
            worker = self.workers[name]
            target = worker.config.bundle
            model = self.load(worker.config, bundle, require_signature)
            model.name = name
            staged = None
            try:
                self.versions.check(name, model.bundle, allow_downgrade)
                if write_over_configured:
                    staged = stage_copy(bundle, target)
                worker.swap(model)  # refused unless the input has the same kind and shape; the old model keeps running
            except BaseException:
                model.close()
                if staged is not None:
                    staged.discard()
                raise
            if staged is not None:
                try:
                    staged.commit()
                except OSError as exc:
                    self._restore(name)
                    raise OSError(f"cannot write {target}: {exc}; the previous bundle runs again") from None
                model.bundle.path = target  # the same bytes (verified), now where the config points
            self.versions.record(name, model.bundle)
            if self.on_change is not None:
                self.on_change()
            return model

    def _restore(self, name: str) -> None:
        """After a failed file replace: run the configured (old) bundle again, so memory and disk agree."""
        worker = self.workers[name]
        try:
            old = self.load(worker.config)
            old.name = name
            worker.swap(old)
        except Exception:
            log.exception("model %s: could not load %s back; the new model keeps running until a restart", name,
                          worker.config.bundle)
