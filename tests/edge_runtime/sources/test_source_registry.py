"""Source discovery: lazy imports, unknown types, and a clear message when an optional library is missing."""

from __future__ import annotations

import sys

import pytest

from edge_runtime.config import SerialSourceConfig, SyntheticSourceConfig
from edge_runtime.sources import SOURCE_MODULES, SourceUnavailable, create_source, source_class, stream_shape
from edge_runtime.sources.base import Source


@pytest.mark.parametrize("type_name", sorted(set(SOURCE_MODULES) - {"serial"}))
def test_every_source_module_has_its_class(type_name):
    cls = source_class(type_name)
    assert issubclass(cls, Source) and cls.type == type_name


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown source type 'camera'; known: folder, iio, mqtt"):
        source_class("camera")


def test_serial_without_pyserial_says_what_to_install(monkeypatch, make_context):
    monkeypatch.setitem(sys.modules, "serial", None)  # makes `import serial` fail as if it were not installed
    monkeypatch.delitem(sys.modules, "edge_runtime.sources.serial", raising=False)
    with pytest.raises(SourceUnavailable, match=r"the serial source needs pyserial: pip install pyserial"):
        source_class("serial")
    with pytest.raises(SourceUnavailable, match="pip install pyserial"):
        create_source(SerialSourceConfig(type="serial", port="/dev/ttyACM0"), make_context())


def test_create_source_builds_without_starting(make_context, sink):
    source = create_source(SyntheticSourceConfig(type="synthetic", duration_s=1.0), make_context())
    assert source.type == "synthetic" and not source.finished
    assert sink.items == []


def test_stream_shape(timeseries_card, image_card):
    from edge_runtime.card import ModelCard

    assert stream_shape(timeseries_card(channels=6, rate_hz=50)) == (6, 50)
    assert stream_shape(timeseries_card(rate_hz=50), rate_hz=200) == (3, 200)
    features = ModelCard.model_validate({"name": "tab", "input": {"features": 4}})
    assert stream_shape(features) == (4, 1.0)
    with pytest.raises(ValueError, match="takes images"):
        stream_shape(image_card())
