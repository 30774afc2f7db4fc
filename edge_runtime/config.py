"""The daemon's config file, as pydantic models that mirror the YAML tree.

    device_id: pi-01
    broker: mqtt://127.0.0.1:1883
    models:
      - bundle: /var/lib/edge-runtime/activity.bundle
        source: {type: mqtt, topic: sensors/pi-01/imu}

Everything else has a default. Secrets never sit in the file: `${ENV}` substitution, or `password_file`.
`edge-runtime check` and `run` load it through the same code, so check finds every error run would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_runtime.backends import backend_config_union
from edge_runtime.card import Strict
from edge_runtime.contract.broker import BrokerAddress, parse_broker_url
from edge_runtime.snapshot import SnapshotConfig
from edge_runtime.sources import source_config_union
from edge_runtime.yaml_source import load_model


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (test brokers only)")


class BrokerConfig(Strict):
    """The MQTT broker; `url` is mqtt://host:port or mqtts://host:port, parsed by the contract's one parser (the
    fleet tool accepts and refuses the same URLs)."""

    url: str
    username: str | None = Field(None, description="default: the user name in the url, if any")
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: Path | None = Field(None, description="file holding the password (e.g. a systemd credential)")
    tls: TlsConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    client_id: str | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)  # BrokerUrlError is a ValueError: pydantic reports it at the `url` key
        return value

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.url)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def uses_tls(self) -> bool:
        return self.address.tls or self.tls is not None

    def cleartext_password_warning(self) -> str | None:
        """A warning when a password would travel unencrypted (mqtt:// without TLS)."""
        if self.uses_tls or not (self.password_env or self.password_file):
            return None
        return (f"broker {self.url}: the password is sent in clear text over mqtt://; use mqtts:// (TLS) so it "
                "cannot be read on the network")

    def password(self) -> str | None:
        import os

        if self.password_env:
            return os.environ.get(self.password_env)
        if self.password_file:
            return self.password_file.read_text().strip()
        return None


# -- sources and backends: each plugin module declares its own config (edge_runtime/sources, edge_runtime/backends)
#: a model's `source:`, discriminated by `type` over the discovered source plugins
SourceConfig = source_config_union()
#: one entry of a model's `backends:`, discriminated by `type` over the discovered backend plugins
BackendConfig = backend_config_union()


# -- models --------------------------------------------------------------------------------------------------
class DriftBounds(Strict):
    warning: float = Field(ge=0)
    drift: float = Field(ge=0)


class DriftConfig(Strict):
    """Drift detection against the reference statistics in the bundle. Thresholds come calibrated in the bundle;
    an override here applies to every channel."""

    enabled: bool = True
    interval_s: float = Field(60.0, gt=0, description="seconds between drift messages (and at once on a change)")
    class_mix_counts: bool = Field(False, description="a change in the predicted class mix raises the state too")
    thresholds: dict[Literal["psi", "js", "out_of_range", "cusum", "missing", "class_mix"], DriftBounds] = Field(
        default_factory=dict
    )
    stuck_run: int | None = Field(None, ge=2, description="identical samples in a row that make a channel stuck")


class ModelConfig(Strict):
    bundle: Path
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="default: the bundle's name; used in topics, so no '/', '+' or '#'")
    source: SourceConfig
    backends: list[BackendConfig] | None = Field(None, description="tried in order; default: from the board")
    max_batch: int = Field(32, ge=1, description="windows run together when samples arrive faster than inference")
    queue_size: int = Field(1024, ge=1, description="windows waiting for inference; the oldest are dropped beyond")
    drift: DriftConfig = DriftConfig()
    snapshot: SnapshotConfig | None = Field(
        None, description="detectors: a JPEG of the frame, detections drawn, retained on snapshot/<model>")
    state_reset_gap_s: float | None = Field(
        None, gt=0, description="a model with state (card `state:`) starts it over after a pause longer than this "
        "between two windows; default: 4 hops of the stream")


class SpoolConfig(Strict):
    """The on-disk outbox: predictions survive broker outages and daemon restarts."""

    path: Path = Path("/var/lib/edge-runtime/spool.sqlite")
    max_messages: int = Field(100_000, ge=10)


class PublishConfig(Strict):
    predictions_qos: Literal[0, 1, 2] = 1
    stats_qos: Literal[0, 1, 2] = 0
    errors_qos: Literal[0, 1, 2] = 0
    drift_qos: Literal[0, 1, 2] = 1
    stats_interval_s: float = Field(10.0, gt=0)
    errors_per_second: float = Field(5.0, gt=0, description="rate limit of messages on the errors topic")


class SecurityConfig(Strict):
    """Who may sign the models this device runs (`trusted_keys`) and who may command it (`control_keys`).

    With trusted keys, every bundle must be signed by one of them, wherever it comes from (start, reload, deploy):
    `require_signature: false` cannot lower that, it only matters without trusted keys (then an unsigned bundle
    runs, with a warning in the log and the status). Commands and deploy requests are accepted only when signed
    by a control key (docs/security.md)."""

    trusted_keys: list[Path] = Field(default_factory=list, description="public keys (or folders of .pub files)")
    require_signature: bool = False
    control_keys: list[Path] = Field(default_factory=list, description="public keys (or folders of .pub files) "
                                     "whose signed commands and deploy requests this device accepts")
    unsigned_info: bool = Field(False, description="answer an unsigned `info` command (it tells what the status "
                                "and stats already publish)")
    control_max_lifetime_s: float = Field(8 * 24 * 3600.0, gt=0, description="longest validity a signed request "
                                          "may claim")
    control_clock_skew_s: float = Field(300.0, ge=0, description="how far in the future a request's issue time "
                                        "may be")
    max_bundle_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest total of a bundle's members; a "
                                  "bundle that declares more is refused before anything is inflated")

    @model_validator(mode="after")
    def _keys_for_required_signatures(self) -> SecurityConfig:
        if self.require_signature and not self.trusted_keys:
            raise ValueError("require_signature needs trusted_keys")
        return self


class DeployConfig(Strict):
    """Bundles pushed over MQTT by `edge-fleet deploy` (docs/fleet-protocol.md)."""

    enabled: bool = Field(True, description="subscribe to <prefix>/<device>/deploy/request")
    max_bundle_bytes: int = Field(256 * 1024 * 1024, gt=0, description="a larger request is refused at once")
    max_chunk_bytes: int = Field(1024 * 1024, gt=0, le=4 * 1024 * 1024,
                                 description="a request with larger chunks is refused at once")
    require_signature: bool = Field(
        True, description="a bundle that arrives over the network must carry a signature by one of the trusted "
        "keys, whatever security.require_signature says for local files"
    )


class DaemonConfig(Strict):
    """Top level of the daemon's YAML file."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    broker: BrokerConfig
    board: str | None = Field(
        None, description="a device_configs name or a board YAML path; default: detected (edge_runtime.hardware)"
    )
    topic_prefix: str = Field("edge", pattern=r"^[^#+]+$")
    group: str | None = Field(None, description="fleet group named in the status (`edge-fleet deploy --group`)")
    models: list[ModelConfig] = Field(min_length=1)
    spool: SpoolConfig = SpoolConfig()
    publish: PublishConfig = PublishConfig()
    security: SecurityConfig = SecurityConfig()
    deploy: DeployConfig = DeployConfig()
    max_message_bytes: int = Field(1_048_576, gt=0)

    @field_validator("broker", mode="before")
    @classmethod
    def _broker_shorthand(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value


def _rebase(base: Path, value: Path | None) -> Path | None:
    return None if value is None else (base / value).resolve()


def _is_board_file(board: str) -> bool:
    """A board given as a YAML file (`boards/my-pi.yaml`), not a device_configs name (`raspberry-pi-4`)."""
    return Path(board).suffix.lower() in (".yaml", ".yml")


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a daemon config; relative paths in it are relative to the file, not to the directory
    the daemon happens to start in (systemd starts it in /)."""
    config = load_model(path, DaemonConfig, substitute_env=True)
    base = Path(path).resolve().parent
    for model in config.models:
        model.bundle = _rebase(base, model.bundle)
        for plugin_config in (model.source, *(model.backends or [])):
            plugin_config.rebase_paths(base)  # the fields each plugin declares as ConfigPath
    broker = config.broker
    broker.password_file = _rebase(base, broker.password_file)
    if broker.tls is not None:
        broker.tls.ca_file = _rebase(base, broker.tls.ca_file)
        broker.tls.cert_file = _rebase(base, broker.tls.cert_file)
        broker.tls.key_file = _rebase(base, broker.tls.key_file)
    if config.board is not None and _is_board_file(config.board):
        config.board = str(_rebase(base, Path(config.board)))
    config.spool.path = _rebase(base, config.spool.path)
    config.security.trusted_keys = [_rebase(base, key) for key in config.security.trusted_keys]
    config.security.control_keys = [_rebase(base, key) for key in config.security.control_keys]
    return config
