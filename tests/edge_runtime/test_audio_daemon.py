"""Silero VAD end to end: converted from WAV folders, run by the real daemon over the real broker, fed by the replay
source from the speech WAV. Every window's speech / no-speech decision is the one the model run directly (state
carried, the sample rate fed) gives, and the values are within the bundle's tolerance; an int8 bundle agrees with
its own model run directly, and with the original as often as its conversion report says."""

from __future__ import annotations

import numpy as np
import pytest
from paho.mqtt import publish

from converter.cli import main as convert
from edge_runtime.bundle import read_bundle
from tests.support.broker import Collector
from tests.support.control import ControlKey
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.speech import silero_direct, silero_model, speech, write_folders, write_silero_card

pytestmark = pytest.mark.slow


def bundle_direct(bundle_path, samples: np.ndarray, window: int = 576, hop: int = 512) -> np.ndarray:
    """The bundle's own model (sample rate folded in) run directly over the recording, the state carried."""
    import onnxruntime as ort

    bundle = read_bundle(bundle_path)
    session = ort.InferenceSession(bundle.model_bytes(), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    values = []
    for end in range(window, len(samples) + 1, hop):
        output, state = session.run(["output", "stateN"], {"input": samples[None, end - window:end], "state": state})
        values.append(float(output[0, 0]))
    return np.asarray(values)


@pytest.mark.parametrize("quantize", ["none", "auto"])
def test_silero_vad_in_the_daemon_decides_like_the_model_run_directly(quantize, tmp_path, broker):
    calibration, evaluation = write_folders(tmp_path / "data")
    bundle = tmp_path / "silero.bundle"
    card = write_silero_card(tmp_path / "silero.card.yaml")
    assert convert([str(silero_model()), "-o", str(bundle), "--target", "x86_64", "--card", str(card),
                    "--calibration", str(calibration), "--eval", str(evaluation), "--quantize", quantize,
                    "--no-latency", "--max-accuracy-drop", "0.01"]) == 0
    recording = evaluation / "sample.wav"
    original = silero_direct(speech())
    windows = len(original)
    key = ControlKey(tmp_path / "keys")  # commands are signed (issue 13): info too
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=bundle,
                          source={"type": "replay", "path": str(recording), "speed": 0},
                          extra={"security": {"control_keys": [str(key.public)]}})
    with Collector(broker.port, "edge/dev-1/#") as collector:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: len(messages(collector, "/predictions/silero-vad")) >= windows, 60), \
                daemon.output()
            publish.single("edge/dev-1/cmd/info", key.command("info"), qos=1, hostname="127.0.0.1",
                           port=broker.port)
            assert wait_until(lambda: bool(messages(collector, "/cmd/info/result")), 10), daemon.output()
        finally:
            assert daemon.terminate() == 0, daemon.output()
        model_stats = messages(collector, "/cmd/info/result")[0]["stats"]["models"]["silero-vad"]
    predictions = sorted(messages(collector, "/predictions/silero-vad"), key=lambda message: message["seq"])
    assert len(predictions) == windows  # every window of the recording, once
    values = np.array([message["values"][0] for message in predictions])
    decisions = np.array([message["decision"] for message in predictions])
    assert decisions.tolist() == (values >= 0.5).tolist()

    manifest = read_bundle(bundle).manifest
    direct = bundle_direct(bundle, speech())
    tolerance = manifest.golden.atol + manifest.golden.rtol * np.abs(direct)
    assert (np.abs(values - direct) <= tolerance).all(), float(np.abs(values - direct).max())
    assert decisions.tolist() == (direct >= 0.5).tolist()  # the device decides as its model does, every window
    if quantize == "none":
        assert decisions.tolist() == (original >= 0.5).tolist()  # ... which is the original's decision
    else:
        agreement = float(np.mean(decisions == (original >= 0.5)))
        reported = manifest.verification["sequence"]["stages"][manifest.verification["final_stage"]]
        assert agreement == pytest.approx(reported["decision_agreement"])
        assert agreement >= 0.99
    # speech and silence were both there, and the stream's state was never started over (no gaps in a replay)
    assert 0.3 < decisions.mean() < 0.95
    assert model_stats["state"] == {"inputs": ["state"], "reset_gap_s": pytest.approx(4 * 512 / 16000),
                                    "resets": {"gap": 0, "time_back": 0, "non_finite": 0}}
