"""The ESP32 Arduino sketch, syntax- and type-checked by the host g++ against stub headers of the Arduino core,
Wire, WiFi and PubSubClient (no Arduino or ESP32 toolchain is reachable here: not on the package index, npm or
Debian; PlatformIO fetches its toolchains from its own registry). This catches syntax errors, wrong calls and
type mistakes, not what only the real core or the xtensa compiler would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SKETCH = (Path(__file__).resolve().parents[2] / "firmware_examples" / "sensor-nodes" / "esp32-arduino"
          / "esp32_mpu6050" / "esp32_mpu6050.ino")
STUBS = Path(__file__).resolve().parent / "arduino_stubs"


def syntax_check(sketch: Path) -> subprocess.CompletedProcess:
    compiler = shutil.which("g++")
    assert compiler, "g++ is missing (Debian: apt-get install g++)"
    return subprocess.run([compiler, "-std=gnu++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c++",
                           "-include", "Arduino.h", "-I", str(STUBS), str(sketch)], capture_output=True, text=True)


def test_the_sketch_compiles_against_the_stub_headers():
    result = syntax_check(SKETCH)
    assert result.returncode == 0, result.stderr


def test_the_check_catches_a_wrong_call(tmp_path):
    broken = tmp_path / "broken.ino"
    broken.write_text(SKETCH.read_text().replace("mqtt.loop();", "mqtt.lop();"))
    result = syntax_check(broken)
    assert result.returncode != 0 and "lop" in result.stderr


def test_the_sketch_reads_the_mpu6050_as_the_issue_says():
    text = SKETCH.read_text()
    for needle in ("MPU_ADDRESS = 0x68", "PWR_MGMT_1 = 0x6B", "mpuWrite(PWR_MGMT_1, 0x00)", "ACCEL_XOUT_H = 0x3B",
                   "requestFrom(MPU_ADDRESS, (uint8_t)14)", "(high << 8) | low", "mqtt.setKeepAlive(KEEPALIVE_S)",
                   '\\"samples\\": ['):
        assert needle in text, needle
