"""The IIO source against a fake sysfs tree laid out like the kernel's (/sys/bus/iio/devices/iio:deviceN)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edge_runtime.sources.iio import IioSource, IioSourceConfig
from edge_runtime.stream import InputRejected

AXES = ["in_accel_x_raw", "in_accel_y_raw", "in_accel_z_raw"]


@pytest.fixture
def sysfs(tmp_path):
    """An ADC at iio:device0 and an accelerometer (mpu6050) at iio:device1."""
    adc = tmp_path / "iio:device0"
    adc.mkdir()
    (adc / "name").write_text("ads1015\n")
    (adc / "in_voltage0_raw").write_text("1200\n")
    accel = tmp_path / "iio:device1"
    accel.mkdir()
    (accel / "name").write_text("mpu6050\n")
    (accel / "in_accel_x_raw").write_text("100\n")
    (accel / "in_accel_y_raw").write_text("-50\n")
    (accel / "in_accel_z_raw").write_text("16384\n")
    (accel / "in_accel_scale").write_text("0.000598\n")  # type-wide scale
    (accel / "in_accel_offset").write_text("2\n")  # type-wide offset
    (accel / "in_accel_z_scale").write_text("0.001\n")  # a channel's own scale wins
    (accel / "in_temp_input").write_text("36500\n")  # already processed by the driver
    return tmp_path


def iio(context, root, device="mpu6050", channels=AXES, **options) -> IioSource:
    return IioSource(IioSourceConfig(type="iio", device=device, channels=channels, root=root, **options), context)


def test_value_is_raw_plus_offset_times_scale(sysfs, make_context):
    source = iio(make_context(), sysfs)
    assert source.device_path.name == "iio:device1"
    block = source.read_sample()
    assert block.values.shape == (1, 3) and block.values.dtype == np.float32
    np.testing.assert_allclose(block.values[0], [(100 + 2) * 0.000598, (-50 + 2) * 0.000598, (16384 + 2) * 0.001],
                               rtol=1e-6)


def test_device_by_folder_name_and_processed_attributes(sysfs, make_context, timeseries_card):
    source = iio(make_context(timeseries_card(channels=2)), sysfs, device="iio:device1",
                 channels=["in_temp_input", "in_accel_x_raw"])
    np.testing.assert_allclose(source.read_sample().values[0], [36500, 102 * 0.000598], rtol=1e-6)
    adc = iio(make_context(timeseries_card(channels=1)), sysfs, device="ads1015", channels=["in_voltage0_raw"])
    assert adc.read_sample().values[0, 0] == 1200  # no scale file: raw as is


def test_polls_at_the_rate_in_a_thread(sysfs, sink, make_context):
    source = iio(make_context(), sysfs, rate_hz=200)
    source.start()
    sink.wait_until(lambda: sink.samples() >= 10)
    _replace_attribute(sysfs / "iio:device1" / "in_accel_x_raw", "200\n")
    sink.wait_until(lambda: sink.values()[-1, 0] == pytest.approx(202 * 0.000598, rel=1e-6))
    source.stop()
    ts = sink.ts()
    assert (np.diff(ts) > 0).all()
    assert 0.001 < np.median(np.diff(ts)) < 0.05  # about 5 ms apart; loose, scheduling varies
    assert sink.rejections == []


def test_read_error_is_a_reject_and_polling_goes_on(sysfs, sink, make_context):
    source = iio(make_context(), sysfs, rate_hz=200)
    raw = sysfs / "iio:device1" / "in_accel_y_raw"
    raw.unlink()
    source.start()
    sink.wait_until(lambda: len(sink.rejections) >= 3)
    raw.write_text("-50\n")
    count = sink.samples()
    sink.wait_until(lambda: sink.samples() > count + 2)
    source.stop()
    rejected, where = sink.rejections[0]
    assert rejected.reason == "sensor_read_error" and "in_accel_y_raw" in rejected.detail
    assert where == "iio:mpu6050"


def test_garbage_reading_is_a_reject(sysfs, make_context):
    source = iio(make_context(), sysfs)
    (sysfs / "iio:device1" / "in_accel_x_raw").write_text("busy\n")
    with pytest.raises(InputRejected) as info:
        source.read_sample()
    assert info.value.reason == "sensor_read_error" and "in_accel_x_raw" in info.value.detail


def test_unknown_device_lists_the_available_ones(sysfs, make_context):
    with pytest.raises(ValueError, match=r"no IIO device 'bme280'.*iio:device0 \(ads1015\), iio:device1 \(mpu6050\)"):
        iio(make_context(), sysfs, device="bme280")


def test_unknown_attribute_lists_the_available_ones(sysfs, make_context):
    with pytest.raises(ValueError, match=r"no attribute 'in_accel_w_raw'.*in_accel_x_raw, in_accel_y_raw"):
        iio(make_context(), sysfs, channels=["in_accel_x_raw", "in_accel_y_raw", "in_accel_w_raw"])


def test_missing_root_and_channel_count(tmp_path, sysfs, make_context):
    with pytest.raises(ValueError, match="kernel driver loaded"):
        iio(make_context(), tmp_path / "nothing")
    with pytest.raises(ValueError, match="lists 2 channels but the model takes 3"):
        iio(make_context(), sysfs, channels=AXES[:2])


def _replace_attribute(path, text: str) -> None:
    """Change a fake sysfs value the way the kernel does, all at once: a plain `write_text` truncates first, and a
    poll between the truncate and the write reads an empty attribute (a real sensor error, but not this test's)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)
