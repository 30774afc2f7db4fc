"""Silero VAD v5 (a recurrent audio model with state and an int64 sample-rate input, from its pinned wheel) converted
from folders of WAV files for x86_64 and raspberry-pi-5: verified over the recording with the state carried, its
decision agreement and value error in the report and used by the gate. Plus the npz form for several inputs and
the one-line refusals (a card that misses an input, a recording at another rate)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from converter.cli import main
from edge_runtime.audio.wav import write_wav
from edge_runtime.bundle import read_bundle
from tests.support.speech import RATE, silero_direct, silero_model, speech, write_folders, write_silero_card
from tests.support.stateful_model import WINDOW, accumulator_card, build_accumulator, expected_totals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_folders(tmp_path_factory.mktemp("speech"))


@pytest.mark.parametrize("board", ["x86_64", "raspberry-pi-5"])
def test_silero_vad_converts_from_wav_folders_with_sequence_fidelity(board, folders, tmp_path):
    calibration, evaluation = folders
    out = tmp_path / "silero.bundle"
    card = write_silero_card(tmp_path / "silero.card.yaml")
    assert main([str(silero_model()), "-o", str(out), "--target", board, "--card", str(card), "--calibration",
                 str(calibration), "--eval", str(evaluation), "--no-latency", "--max-accuracy-drop", "0.01"]) == 0
    manifest = read_bundle(out).manifest
    report = manifest.verification
    sequence = report["sequence"]
    windows = len(silero_direct(speech()))
    assert sequence["windows"] == windows and sequence["recordings"] == 1
    assert sequence["state"] == {"state": "stateN"} and sequence["threshold"] == 0.5
    final = sequence["stages"][report["final_stage"]]
    assert final["decision_agreement"] >= 0.99 and final["mean_abs_error"] < 0.05
    assert sequence["stages"]["original"] == {"decision_agreement": 1.0, "max_abs_error": 0.0, "mean_abs_error": 0.0}
    assert report["gate"]["basis"] == "decision agreement" and report["gate"]["passed"]
    assert report["gate"]["loss"] == pytest.approx(1 - final["decision_agreement"], abs=1e-6)
    notes = " | ".join(report["notes"])
    assert "sr folded into the graph" in notes and "matches the model as given" in notes
    assert "1 WAV recording(s), 937 windows" in notes
    # the bundle's model takes the audio and the state; the sample rate is part of the graph now
    assert [spec.name for spec in manifest.inputs] == ["input", "state"]
    assert manifest.inputs[1].shape == [2, 1, 128]
    assert manifest.card["constants"] == {} and manifest.card["state"] == {"state": "stateN"}


def accumulator_files(tmp_path, card: dict) -> tuple:
    model = tmp_path / "accumulator.onnx"
    model.write_bytes(build_accumulator().SerializeToString())
    card_path = tmp_path / "card.yaml"
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    return model, card_path


def test_npz_with_only_the_streamed_input_and_recording_ids(tmp_path):
    """Constants from the card, the state produced by running each recording: the report's values are the
    accumulator's own (computed by hand), per recording."""
    model, card = accumulator_files(tmp_path, accumulator_card(k=2))
    rows = np.random.default_rng(0).normal(size=(12, WINDOW)).astype(np.float32)
    recording = np.repeat([0, 1], 6)
    data = tmp_path / "data.npz"
    np.savez(data, x=rows, recording=recording)
    out = tmp_path / "a.bundle"
    assert main([str(model), "-o", str(out), "--target", "x86_64", "--card", str(card), "--eval", str(data),
                 "--quantize", "none", "--no-latency"]) == 0
    bundle = read_bundle(out)
    report = bundle.manifest.verification
    assert report["sequence"]["recordings"] == 2 and report["sequence"]["windows"] == 12
    # the golden input is a window from the middle of the data, fed the state the model had reached there
    inputs, outputs = bundle.golden()
    flat = rows.reshape(-1)
    want = expected_totals(flat, 2, resets_before={6})
    assert outputs["y"].item() == pytest.approx(want[6])  # row 6 starts recording 1: the state starts over
    assert inputs["state"].item() == 0.0 and sorted(inputs) == ["state", "x"]


def test_a_card_that_misses_an_input_is_one_line_with_its_line(tmp_path, capsys):
    card = accumulator_card()
    card["constants"] = {"gain": 3}
    model, card_path = accumulator_files(tmp_path, card)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.zeros((4, WINDOW), np.float32))
    assert main([str(model), "-o", str(tmp_path / "a.bundle"), "--target", "x86_64", "--card", str(card_path),
                 "--eval", str(data), "--no-latency"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the terminal wraps long lines
    lines = yaml.safe_dump(card, sort_keys=False).splitlines()
    line = next(index for index, text in enumerate(lines, start=1) if text.startswith("constants:")) + 1
    assert "Traceback" not in err
    assert f"[{card_path}:{line}] constants.gain: the model has no input 'gain'" in err
    assert "model input 'k' is not described by the card" in err and err.count("edge-convert: error") == 1


def test_a_wav_folder_at_another_rate_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "wavs"
    folder.mkdir()
    write_wav(folder / "a.wav", np.zeros(8000), 8000)
    card = write_silero_card(tmp_path / "silero.card.yaml")
    assert main([str(silero_model()), "-o", str(tmp_path / "s.bundle"), "--target", "x86_64", "--card", str(card),
                 "--eval", str(folder), "--no-latency"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "recorded at 8000 Hz but the model takes 16000 Hz" in err and err.count("edge-convert: error") == 1
    assert "Traceback" not in err


def test_the_speech_sample_has_speech_and_silence():
    """The recording the tests rely on: the model hears no speech in the first 6 s and speech later."""
    probabilities = silero_direct(speech())
    seconds = (np.arange(len(probabilities)) * 512 + 576) / RATE
    assert (probabilities[seconds < 6.0] < 0.5).all()
    assert (probabilities[seconds > 6.0] >= 0.5).mean() > 0.6
