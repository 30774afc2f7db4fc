"""The card from exporter metadata: ultralytics' names/imgsz/task read into a card, a card file over it, and
errors that still point at the card file's line."""

from __future__ import annotations

import pytest

from converter.card_inference import _merge, resolve_card, ultralytics_card
from edge_runtime.yaml_source import ConfigError

METADATA = {"names": "{0: 'person', 1: 'bicycle', 2: 'car'}", "imgsz": "[480, 640]", "stride": "32",
            "task": "detect", "version": "8.3.0"}


def test_ultralytics_detect_metadata_makes_a_letterboxed_yolo_card():
    draft, notes = ultralytics_card(METADATA, "yolov8n")
    assert notes == []
    assert draft["name"] == "yolov8n" and draft["labels"] == ["person", "bicycle", "car"]
    assert (draft["input"]["height"], draft["input"]["width"], draft["input"]["resize"]) == (480, 640, "letterbox")
    assert draft["output"] == {"kind": "detection", "format": "yolo"}


def test_square_imgsz_classify_task_and_tasks_the_device_cannot_decode():
    draft, _ = ultralytics_card({**METADATA, "imgsz": "224", "task": "classify"}, "cls")
    assert draft["input"]["height"] == draft["input"]["width"] == 224 and draft["input"]["resize"] == "stretch"
    assert draft["output"]["kind"] == "classification"
    draft, notes = ultralytics_card({**METADATA, "task": "segment"}, "seg")
    assert "output" not in draft and "segment" in notes[0]


def test_no_metadata_no_card():
    assert ultralytics_card({"producer": "pytorch"}, "m") == ({}, [])


def test_the_card_wins_field_by_field_and_a_section_of_another_kind_replaces_the_metadatas():
    draft, _ = ultralytics_card(METADATA, "m")
    merged, taken = _merge(draft, {"labels": ["a", "b", "c"], "input": {"resize": "stretch"},
                                   "output": {"kind": "raw"}})
    assert merged["labels"] == ["a", "b", "c"] and merged["input"]["resize"] == "stretch"
    assert merged["input"]["height"] == 480 and merged["output"] == {"kind": "raw"}
    assert "labels" not in taken and "input.resize" not in taken and "input.height" in taken
    assert not any(key.startswith("output.") for key in taken)


def test_a_misspelt_detection_key_points_at_the_card_line(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: det\ninput: {kind: image, height: 64, width: 64}\noutput:\n  kind: detection\n"
                    "  score_treshold: 0.4\n")
    with pytest.raises(ConfigError) as error:
        resolve_card(card, tmp_path / "model.tflite", "tflite")
    assert "card.yaml:5] output.score_treshold: unknown key. Did you mean 'score_threshold'?" in error.value.problems[0]


def test_a_tflite_model_without_a_card_has_none(tmp_path):
    assert resolve_card(None, tmp_path / "model.tflite", "tflite").card is None
