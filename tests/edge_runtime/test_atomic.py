"""The one atomic-write helper: a target is the old file or the whole new one, and no temp file is left behind."""

from __future__ import annotations

import os

import pytest

from edge_runtime import atomic


def leftovers(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


def test_write_bytes_replaces_and_leaves_nothing(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    atomic.write_bytes(target, b"new")
    atomic.write_bytes(tmp_path / "chunk", b"fast", sync=False)
    assert target.read_bytes() == b"new" and (tmp_path / "chunk").read_bytes() == b"fast"
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bundle"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_writer(target) as out:
        out.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_staged_copy_is_in_place_only_after_commit(tmp_path):
    source, target = tmp_path / "new.bundle", tmp_path / "model.bundle"
    source.write_bytes(b"new" * 100_000)
    target.write_bytes(b"old")
    staged = atomic.stage_copy(source, target)
    assert target.read_bytes() == b"old" and staged.temp.parent == tmp_path
    staged.commit()
    assert target.read_bytes() == source.read_bytes() and leftovers(tmp_path) == []
    atomic.stage_copy(source, target).discard()
    assert leftovers(tmp_path) == []


def test_mode(tmp_path):
    atomic.write_bytes(tmp_path / "public", b"x", mode=0o644)
    assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644
