"""`edge-runtime check`: the same loading code as `run`, nothing started; errors name file, line and key."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from edge_runtime.cli import main
from tests.support.daemon import write_config


def check(capsys, config) -> tuple[int, str]:
    code = main(["check", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_good_config(tmp_path, activity_bundle, activity_recording):
    config = write_config(tmp_path / "ok.yaml", broker_url="mqtt://127.0.0.1:1", bundle=activity_bundle,
                          source={"type": "replay", "path": str(activity_recording)})
    # in its own process, as a user runs it: check holds the process's memory to the board's budget, and this test
    # process holds every model the session loaded
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "check", str(config)], capture_output=True,
                          text=True, timeout=120)
    code, text = done.returncode, done.stdout + done.stderr
    assert code == 0, text
    assert "golden output reproduced" in text and "onnxruntime:CPUExecutionProvider ok" in text
    assert "source replay: ok" in text


def test_typo_names_file_line_key_and_suggestion(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n"
                      "    source: {type: mqtt, topic: t}\n    max_bach: 8\n")
    code, text = check(capsys, config)
    assert code == 1
    assert f"[{config}:6] models.0.max_bach: unknown key. Did you mean 'max_batch'?" in text


def test_wrong_source_type_and_missing_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n"
                      "    source: {type: mqt, topic: t}\n")
    code, text = check(capsys, config)
    assert code == 1 and f"{config}:5" in text and "models.0.source" in text
    config.write_text("broker: mqtt://127.0.0.1:1883\nmodels: []\n")
    code, text = check(capsys, config)
    assert code == 1 and "device_id: required key is missing" in text


def test_credentials_in_the_url_are_refused(tmp_path, capsys):
    config = tmp_path / "secret.yaml"
    config.write_text("device_id: pi-01\nbroker: mqtt://user:hunter2@broker:1883\nmodels:\n  - bundle: a.bundle\n"
                      "    source: {type: mqtt, topic: t}\n")
    code, text = check(capsys, config)
    assert code == 1 and "no credentials inside the url" in text


def test_missing_environment_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_TEST_BROKER", raising=False)
    config = tmp_path / "env.yaml"
    config.write_text("device_id: pi-01\nbroker: ${EDGE_TEST_BROKER}\nmodels:\n  - bundle: a.bundle\n"
                      "    source: {type: mqtt, topic: t}\n")
    code, text = check(capsys, config)
    assert code == 1 and "EDGE_TEST_BROKER" in text


def test_missing_and_tampered_bundles(tmp_path, capsys, activity_bundle):
    config = write_config(tmp_path / "missing.yaml", broker_url="mqtt://127.0.0.1:1",
                          bundle=tmp_path / "nope.bundle", source={"type": "mqtt", "topic": "t"})
    code, text = check(capsys, config)
    assert code == 1 and "nope.bundle" in text
    tampered = tmp_path / "tampered.bundle"
    with zipfile.ZipFile(activity_bundle) as original, zipfile.ZipFile(tampered, "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, data[:-1] + b"\x01" if info.filename == "model.onnx" else data)
    config = write_config(tmp_path / "tampered.yaml", broker_url="mqtt://127.0.0.1:1", bundle=tampered,
                          source={"type": "mqtt", "topic": "t"})
    code, text = check(capsys, config)
    assert code == 1 and "checksum mismatch" in text


def test_replay_file_that_does_not_exist(tmp_path, capsys, activity_bundle):
    config = write_config(tmp_path / "replay.yaml", broker_url="mqtt://127.0.0.1:1", bundle=activity_bundle,
                          source={"type": "replay", "path": str(tmp_path / "absent.csv")})
    code, text = check(capsys, config)
    assert code == 1 and "absent.csv" in text


def test_a_source_whose_library_is_missing_is_named_with_its_pip_command(tmp_path, capsys, activity_bundle,
                                                                           monkeypatch):
    """The config validates without pyserial (discovery never imports it); check names what to install."""
    monkeypatch.setitem(sys.modules, "serial", None)  # `import serial` fails as on a device install
    config = write_config(tmp_path / "serial.yaml", broker_url="mqtt://127.0.0.1:1", bundle=activity_bundle,
                          source={"type": "serial", "port": "/dev/ttyACM0"})
    code, text = check(capsys, config)
    assert code == 1 and f"config {config}: ok" in text
    assert "source serial: the serial source needs pyserial: pip install pyserial" in text


def test_run_with_a_bad_config_exits_non_zero(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("device_id: pi-01\n")
    assert main(["run", str(config)]) == 1
    assert "broker: required key is missing" in capsys.readouterr().err
