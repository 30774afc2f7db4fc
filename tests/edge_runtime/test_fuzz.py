"""Property tests (hypothesis) of everything that reads untrusted bytes: the sensor decoders, the config loader,
the bundle reader, the command handler and the deploy receiver. The property is always the same: a result or the
module's own one-line error, never another exception, never a hang. The seed corpus (tests/corpus/) runs first.
Bounded in `make test` by the `ci` profile (tests/support/fuzz.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.bundle import BundleError, read_bundle
from edge_runtime.config import DaemonConfig
from edge_runtime.decode import decode_float32, decode_json
from edge_runtime.sources.serial import decode_csv_line
from edge_runtime.stream import InputRejected, SampleBlock
from edge_runtime.yaml_source import ConfigError, load_model
from tests.support.control import ControlKey
from tests.support.fuzz import corpus

CHANNELS = 3
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30)
sensor_messages = st.fixed_dictionaries({}, optional={
    "ts": json_values, "values": json_values | st.lists(st.floats() | st.integers(), max_size=5),
    "samples": st.lists(st.lists(st.floats() | st.integers() | st.none(), max_size=4), max_size=4)})


def decodes_or_rejects(payload: bytes) -> None:
    for decode in (decode_json, decode_float32):
        try:
            block = decode(payload, CHANNELS, 10.0, 1_000_000)
        except InputRejected as rejected:
            assert rejected.reason and str(rejected)
        else:
            assert isinstance(block, SampleBlock) and np.isfinite(block.values).all()
            assert block.values.shape[1] == CHANNELS and np.isfinite(block.ts).all()
    try:
        block = decode_csv_line(payload, CHANNELS, 1.0)
    except InputRejected as rejected:
        assert rejected.reason
    else:
        assert np.isfinite(block.values).all()


@pytest.mark.parametrize(("name", "payload"), corpus("sensor"))
def test_sensor_corpus(name, payload):
    decodes_or_rejects(payload)


@given(st.binary(max_size=256))
def test_sensor_decoders_on_any_bytes(payload):
    decodes_or_rejects(payload)


@given(sensor_messages)
def test_sensor_decoders_on_json_shaped_messages(message):
    decodes_or_rejects(json.dumps(message, allow_nan=True).encode())


# -- the config loader ---------------------------------------------------------------------------------------------
def loads_or_refuses(tmp_path, text: str | bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    try:
        load_model(path, DaemonConfig, substitute_env=True)
    except ConfigError as error:
        assert error.problems and all(line.startswith("[") for line in error.problems)


@pytest.mark.parametrize(("name", "text"), corpus("config"))
def test_config_corpus(tmp_path, name, text):
    loads_or_refuses(tmp_path, text)


yaml_scalars = st.sampled_from(["pi-01", "mqtt://127.0.0.1:1883", "1", "-3", "true", "null", "~", "[]", "{}",
                                "&a x", "*a", "!!binary aGk=", "${HOME}", "${X:-y}", "'", "\"", ":", "- x", "\t"])
yaml_keys = st.sampled_from(["device_id", "broker", "models", "bundle", "source", "type", "topic", "security",
                             "trusted_keys", "control_keys", "deploy", "max_bach", "spool", "publish", "url"])


@given(st.lists(st.tuples(st.integers(0, 3), yaml_keys, yaml_scalars), max_size=12))
def test_config_loader_on_yaml_shaped_text(tmp_path_factory, lines):
    text = "\n".join(f"{'  ' * depth}{key}: {value}" for depth, key, value in lines)
    loads_or_refuses(tmp_path_factory.mktemp("config"), text)


@given(st.binary(max_size=200))
def test_config_loader_on_any_bytes(tmp_path_factory, data):
    loads_or_refuses(tmp_path_factory.mktemp("config"), data)


# -- the bundle reader ---------------------------------------------------------------------------------------------
def small_bundle() -> bytes:
    """A real (tiny) bundle made by the one writer: manifest, a model member, a golden npz."""
    from edge_runtime.bundle import Manifest, pack_golden, write_bundle

    manifest = Manifest(name="m", version="1", producer={"tool": "t", "version": "0"},
                        target={"board": "x86_64", "arch": "x86_64", "config": {}},
                        model={"path": "model.onnx", "format": "onnx", "precision": "fp32"},
                        inputs=[{"name": "x", "shape": [1, 2], "dtype": "float32"}],
                        outputs=[{"name": "y", "shape": [1, 2], "dtype": "float32"}],
                        golden={"rtol": 0.0, "atol": 0.0})
    golden = pack_golden({"x": np.ones((1, 2), np.float32)}, {"y": np.ones((1, 2), np.float32)})
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.bundle"
        write_bundle(path, manifest, {"model.onnx": b"model bytes", "golden.npz": golden})
        return path.read_bytes()


BUNDLE = small_bundle()


@given(st.lists(st.tuples(st.integers(0, len(BUNDLE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(BUNDLE)))
def test_the_bundle_reader_on_damaged_bundles(tmp_path_factory, flips, cut):
    data = bytearray(BUNDLE)
    for where, value in flips:
        data[where] = value
    path = tmp_path_factory.mktemp("bundle") / "b.bundle"
    path.write_bytes(bytes(data[:cut] if cut > len(data) // 2 else data))
    try:
        bundle = read_bundle(path, max_size=1 << 20)
        bundle.golden()
    except BundleError as error:
        assert str(error)


@given(st.dictionaries(st.sampled_from(["manifest.json", "manifest.sig", "model.onnx", "golden.npz", "x/../y",
                                        "/abs"]), st.binary(max_size=64), max_size=5))
def test_the_bundle_reader_on_made_up_archives(tmp_path_factory, members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path = tmp_path_factory.mktemp("bundle") / "b.bundle"
    path.write_bytes(buffer.getvalue())
    try:
        read_bundle(path).golden()
    except BundleError as error:
        assert str(error)


# -- commands and deploy requests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def key(tmp_path_factory) -> ControlKey:
    return ControlKey(tmp_path_factory.mktemp("control"))


def authority_accepts_or_refuses(key: ControlKey, payload: bytes) -> None:
    from edge_runtime.control.authority import REASONS, ControlRefused

    authority = key.authority()
    for action in ("cmd/reload", "deploy/request"):
        try:
            authority.check(action, payload)
        except ControlRefused as refused:
            assert refused.reason in REASONS


@pytest.mark.parametrize(("name", "payload"), corpus("control"))
def test_control_corpus(key, name, payload):
    authority_accepts_or_refuses(key, payload)


@given(st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode()))
def test_the_authority_on_any_payload(key, payload):
    authority_accepts_or_refuses(key, payload)


@given(st.text(max_size=80), json_values)
def test_the_authority_on_signed_claims_of_any_shape(key, action, body):
    """Even a validly signed envelope with nonsense inside is a refusal with a reason, not an exception."""
    from edge_runtime.signing import sign_bytes

    claims = json.dumps({"action": action, "body": body, "nonce": "x", "prefix": "edge", "device": "dev-1"})
    payload = json.dumps({"schema": 2, "claims": claims,
                          "signature": sign_bytes(claims.encode(), key.signer._key)}).encode()
    authority_accepts_or_refuses(key, payload)


@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()),
       st.sampled_from(["info", "reload", "nope"]))
def test_the_command_handler_answers_anything(key, payload, name):
    from tests.edge_runtime.test_commands_unit import Device

    device = Device(key)
    handler = device.handler()
    try:
        handler.handle(f"edge/dev-1/cmd/{name}", payload)
        handler.handle("edge/dev-1/cmd/info", key.command("info", {"request_id": "sentinel"}))
        from tests.support.daemon import wait_until

        assert wait_until(lambda: any(r.get("request_id") == "sentinel" for r in device.link.results("info")), 10), \
            "the command thread died"
    finally:
        handler.stop(timeout=5)


@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_the_deploy_receiver_survives_anything(tmp_path_factory, key, payload):
    from edge_runtime.config import DeployConfig
    from edge_runtime.contract import DeviceTopics
    from edge_runtime.control.deploy import DeployReceiver
    from tests.edge_fleet.test_deploy_receiver_unit import Models, Subscriber
    from tests.support.daemon import wait_until

    folder = tmp_path_factory.mktemp("deploy")
    published: list = []
    subscriber = Subscriber()
    receiver = DeployReceiver(Models(), lambda topic, data, qos=1, retain=False: published.append(json.loads(data)),
                              subscriber, DeviceTopics("edge", "dev-1"), DeployConfig(require_signature=False),
                              folder=folder / "deploy", can_verify=False, authority=key.authority())
    receiver.start()
    try:
        subscriber.deliver("edge/dev-1/deploy/request", payload)
        subscriber.deliver("edge/dev-1/deploy/request", key.deploy({"deployment_id": "sentinel"}))
        assert wait_until(lambda: any(d.get("deployment_id") == "sentinel" for d in published), 10), \
            "the deploy thread died"
    finally:
        receiver.stop(timeout=5)
