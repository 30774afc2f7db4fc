"""Recorded sysfs, procfs and /dev trees of each board, written out at test time from `board_trees.json`.

The recordings are text (a device tree's `compatible` and `model` are NUL-separated strings, stored with `\\u0000`
escapes), so git holds one readable file instead of a hundred and seventy small ones, some of them binary. Each
process writes the trees once into a temporary folder and hands out its path; tests that change a tree copy it first.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

RECORDINGS = Path(__file__).resolve().with_name("board_trees.json")


@lru_cache(maxsize=1)
def board_trees() -> Path:
    """The folder holding one tree per recording (`<folder>/rk3588/proc/device-tree/compatible`, ...)."""
    folder = Path(tempfile.mkdtemp(prefix="edge-board-trees-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for board, files in json.loads(RECORDINGS.read_text()).items():
        for relative, text in files.items():
            path = folder / board / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
    return folder
