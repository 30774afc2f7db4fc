"""Board files: every shipped board loads, unknown names list the known ones."""

from __future__ import annotations

import pytest

from edge_runtime.board import UnknownBoardError, known_boards, load_board

REQUIRED = {"x86_64", "generic-arm64", "raspberry-pi-4", "raspberry-pi-5", "jetson-orin"}


def test_required_boards_ship():
    assert set(known_boards()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(known_boards()))
def test_every_board_file_is_valid(name):
    board = load_board(name)
    assert board.name == name
    assert board.quantization.preferred in board.quantization.supports
    assert board.threads <= board.cores


def test_signedness_follows_the_hardware():
    assert load_board("x86_64").quantization.activations == "uint8"
    for arm in ("generic-arm64", "raspberry-pi-4", "raspberry-pi-5"):
        assert load_board(arm).quantization.activations == "int8"


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UnknownBoardError) as caught:
        load_board("beaglebone")
    message = str(caught.value)
    assert "unknown board 'beaglebone'" in message and "raspberry-pi-4" in message


def test_a_board_file_by_path(tmp_path):
    path = tmp_path / "my-board.yaml"
    path.write_text("name: my-board\narch: aarch64\ncores: 4\nthreads: 2\n")
    assert load_board(str(path)).name == "my-board"
