"""WAV files read with numpy alone, checked against files written by scipy: every PCM width and float, stereo,
WAVE_FORMAT_EXTENSIBLE; formats that cannot be read are refused naming the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import scipy.io.wavfile

from edge_runtime.audio.wav import check_rate, read_wav, write_wav

RATE = 8000


@pytest.fixture
def signal() -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.9, 0.9, 500)


@pytest.mark.parametrize(("dtype", "scale"), [(np.int16, 2**15), (np.int32, 2**31), (np.float32, 1.0),
                                              (np.float64, 1.0)])
def test_pcm_and_float_files_written_by_scipy(tmp_path, signal, dtype, scale):
    path = tmp_path / "a.wav"
    data = (signal * (scale - 1)).astype(dtype) if scale > 1 else signal.astype(dtype)
    scipy.io.wavfile.write(path, RATE, data)
    recording = read_wav(path)
    assert recording.rate_hz == RATE and recording.channels == 1 and recording.samples.dtype == np.float32
    np.testing.assert_allclose(recording.samples, data.astype(np.float64) / scale, atol=1e-7)


def test_8_and_24_bit_pcm(tmp_path, signal):
    unsigned = np.round(signal * 127 + 128).astype(np.uint8)
    scipy.io.wavfile.write(tmp_path / "8.wav", RATE, unsigned)
    np.testing.assert_allclose(read_wav(tmp_path / "8.wav").samples, (unsigned - 128.0) / 128.0)
    # 24-bit: three little-endian bytes per sample, as recorders write it
    ints = np.round(signal * (2**23 - 1)).astype(np.int32)
    body = b"".join(int(value).to_bytes(3, "little", signed=True) for value in ints)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(body), b"WAVE", b"fmt ", 16, 1, 1, RATE,
                         RATE * 3, 3, 24, b"data", len(body))
    (tmp_path / "24.wav").write_bytes(header + body)
    np.testing.assert_allclose(read_wav(tmp_path / "24.wav").samples, ints / 2.0**23, atol=1e-7)


def test_stereo_gives_the_first_channel(tmp_path, signal):
    scipy.io.wavfile.write(tmp_path / "s.wav", RATE, np.stack([signal, -signal], axis=1).astype(np.float32))
    recording = read_wav(tmp_path / "s.wav")
    assert recording.channels == 2
    np.testing.assert_allclose(recording.samples, signal.astype(np.float32))


def test_extensible_format_and_odd_chunks(tmp_path, signal):
    pcm = np.round(signal * 32767).astype("<i2").tobytes()
    guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, RATE, RATE * 2, 2, 16, 22, 16, 4) + guid
    odd = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk before the data, padded
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + odd + b"data" + struct.pack("<I", len(pcm)) + pcm
    (tmp_path / "x.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    np.testing.assert_allclose(read_wav(tmp_path / "x.wav").samples, np.round(signal * 32767) / 32768, atol=1e-7)


def test_write_then_read_round_trips(tmp_path, signal):
    write_wav(tmp_path / "w.wav", signal, RATE)
    rate, data = scipy.io.wavfile.read(tmp_path / "w.wav")
    assert rate == RATE and data.dtype == np.int16
    np.testing.assert_allclose(read_wav(tmp_path / "w.wav").samples, signal, atol=1 / 32768)


@pytest.mark.parametrize(("content", "message"), [
    (b"not a wav at all", "not a WAV file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 2, 1, RATE, RATE, 1, 4)
     + b"data\x00\x00\x00\x00", "format code 2 with 4 bits"),
])
def test_unreadable_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_wav(path)
    assert str(path) in str(error.value)


def test_a_rate_other_than_the_models_is_refused(tmp_path, signal):
    write_wav(tmp_path / "a.wav", signal, 22050)
    with pytest.raises(ValueError, match="recorded at 22050 Hz but the model takes 16000 Hz"):
        check_rate(read_wav(tmp_path / "a.wav"), 16000)
