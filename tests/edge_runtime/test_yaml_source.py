"""Config errors name the file, the line, the key path, and suggest the key that was meant."""

from __future__ import annotations

import pytest

from edge_runtime.board import Board
from edge_runtime.card import ModelCard
from edge_runtime.yaml_source import ConfigError, load_model


def problems(tmp_path, text: str, model=ModelCard, **kwargs) -> list[str]:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_model(path, model, **kwargs)
    return [problem.replace(str(path), "F") for problem in caught.value.problems]


def test_typo_in_a_time_series_input(tmp_path):
    text = "name: a\nlabels: [x]\ninput:\n  window: 5\n  hop: 1\n  rate_hz: 1\n  windw: 3\n  channels: 2\n"
    assert problems(tmp_path, text) == ["[F:7] input.windw: unknown key. Did you mean 'window'?"]


def test_typo_in_an_image_input_suggests_from_the_image_schema(tmp_path):
    text = "name: a\ninput:\n  kind: image\n  heigth: 4\n  width: 3\n"
    found = problems(tmp_path, text)
    assert "[F:4] input.heigth: unknown key. Did you mean 'height'?" in found
    assert "[F:2] input.height: required key is missing" in found


def test_top_level_typo(tmp_path):
    assert problems(tmp_path, "name: a\nlable: [x]\ninput: {features: 3}\n") == [
        "[F:2] lable: unknown key. Did you mean 'labels'?"
    ]


def test_value_errors_point_at_the_key(tmp_path):
    text = "name: a\ninput:\n  window: many\n  hop: 1\n  rate_hz: 1\n  channels: 2\n"
    (problem,) = problems(tmp_path, text)
    assert problem.startswith("[F:3] input.window: Input should be a valid integer") and "'many'" in problem


def test_cross_field_errors_point_at_the_block(tmp_path):
    text = "name: a\ninput:\n  features: 2\n  normalize: {mean: [1], std: [1, 2]}\n"
    (problem,) = problems(tmp_path, text)
    assert problem.startswith("[F:4] input.normalize:") and "mean has 1 values but std has 2" in problem


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path):
    text = "name: b\narch: x86_64\ncores: 2\nthreads: 1\nquantization:\n  zzz: 1\n"
    (problem,) = problems(tmp_path, text, model=Board)
    assert problem.startswith("[F:6] quantization.zzz: unknown key. Known keys here:") and "activations" in problem


def test_invalid_yaml(tmp_path):
    (problem,) = problems(tmp_path, "name: a\ninput: [unclosed\n")
    assert problem.startswith("[F:") and "not valid YAML" in problem


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_model(tmp_path / "absent.yaml", ModelCard)


def test_environment_substitution(tmp_path, monkeypatch):
    path = tmp_path / "card.yaml"
    path.write_text("name: ${MODEL_NAME}\ndescription: ${DESC:-none given}\ninput: {features: 3}\n")
    monkeypatch.setenv("MODEL_NAME", "vibration")
    card = load_model(path, ModelCard, substitute_env=True)
    assert card.name == "vibration" and card.description == "none given"
    monkeypatch.delenv("MODEL_NAME")
    with pytest.raises(ConfigError, match="MODEL_NAME"):
        load_model(path, ModelCard, substitute_env=True)


def test_typos_inside_a_source_or_a_backend_suggest_from_that_plugin_s_config(tmp_path):
    """The plugin unions are discriminated by `type`: the key path skips the tag, the line is the key's own."""
    from edge_runtime.config import DaemonConfig

    text = ("device_id: pi-01\nbroker: mqtt://127.0.0.1:1883\nmodels:\n  - bundle: a.bundle\n    source:\n"
            "      type: replay\n      path: walk.csv\n      sped: 2\n    backends:\n"
            "      - {type: onnxruntime, provider: [CPUExecutionProvider]}\n")
    assert problems(tmp_path, text, model=DaemonConfig) == [
        "[F:8] models.0.source.sped: unknown key. Did you mean 'speed'?",
        "[F:10] models.0.backends.0.provider: unknown key. Did you mean 'providers'?",
    ]
