"""The on-disk outbox: order, bound, persistent counters, recovery from a damaged file."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge_runtime.spool import Spool

REPO = Path(__file__).resolve().parents[2]


def test_peek_is_oldest_first_and_ack_removes(tmp_path):
    spool = Spool(tmp_path / "a" / "b" / "spool.sqlite", max_messages=100)  # parent folders are created
    ids = [spool.append("t/x", f"{i}".encode(), qos=1, retain=i == 2) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    window = spool.peek(3)
    assert [m.payload for m in window] == [b"0", b"1", b"2"]
    assert window[2].retain and not window[0].retain and window[0].qos == 1 and window[0].topic == "t/x"
    assert [m.payload for m in spool.peek(10, after_id=window[-1].id)] == [b"3", b"4"]
    spool.ack([window[0].id, window[1].id, 999_999])  # unknown ids are ignored
    assert spool.depth() == 3
    assert [m.payload for m in spool.peek(10)] == [b"2", b"3", b"4"]
    spool.close()


def test_ids_keep_growing_after_the_spool_empties_and_reopens(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=10)
    first = spool.append("t", b"a", 1)
    spool.ack([first])
    spool.close()
    spool = Spool(path, max_messages=10)
    assert spool.append("t", b"b", 1) > first  # the drainer's "after_id" relies on this
    spool.close()


def test_bound_drops_the_oldest_and_counts_them_across_restarts(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=10)
    for i in range(25):
        spool.append("t", str(i).encode(), 1)
    spool.append_many([("t", str(i).encode(), 1, False) for i in range(25, 30)])
    assert spool.depth() == 10
    assert spool.dropped() == 20
    assert [int(m.payload) for m in spool.peek(100)] == list(range(20, 30))
    spool.close()
    reopened = Spool(path, max_messages=10)
    assert reopened.dropped() == 20 and reopened.depth() == 10
    reopened.close()


def test_seq_counter_persists_across_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=10)
    assert [spool.next_seq("activity") for _ in range(3)] == [1, 2, 3]
    assert spool.next_seq("other") == 1
    assert spool.next_seqs("activity", 4) == range(4, 8)
    spool.close()
    spool = Spool(path, max_messages=10)
    assert spool.next_seq("activity") == 8
    with pytest.raises(ValueError):
        spool.next_seqs("activity", 0)
    spool.close()


def test_concurrent_appends_from_threads(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", max_messages=10_000)
    ids: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(200):
            new = spool.append(f"t/{n}", str(i).encode(), 1)
            with lock:
                ids.append(new)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(ids)) == 800 and spool.depth() == 800
    for n in range(4):  # each writer's messages stay in its order
        assert [int(m.payload) for m in spool.peek(1000) if m.topic == f"t/{n}"] == list(range(200))
    spool.close()


def test_a_committed_row_survives_sigkill(tmp_path):
    path = tmp_path / "spool.sqlite"
    child = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from edge_runtime.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]), 1000)\n"
        "for i in range(50):\n"
        "    spool.append('t', str(i).encode(), 1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(path)], cwd=REPO, timeout=30)
    assert result.returncode == -9
    spool = Spool(path, max_messages=1000)
    assert [int(m.payload) for m in spool.peek(100)] == list(range(50))
    spool.close()


def test_a_corrupt_file_is_moved_aside_and_the_spool_starts_empty(tmp_path, caplog):
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not an sqlite database, just garbage " * 200)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.spool"):
        spool = Spool(path, max_messages=10)
    assert spool.depth() == 0 and spool.dropped() == 0
    assert spool.append("t", b"x", 1) >= 1
    aside = list(tmp_path.glob("spool.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert "unreadable" in caplog.text
    spool.close()


def test_a_file_wrecked_behind_a_valid_header_is_moved_aside(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=1000)
    spool.append_many([("t", b"x" * 1000, 1, False) for _ in range(200)])
    spool.close()
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header page, wreck the tables
    path.write_bytes(bytes(data))
    spool = Spool(path, max_messages=1000)
    spool.append("t", b"after", 1)
    assert [m.payload for m in spool.peek(10)] == [b"after"]
    assert list(tmp_path.glob("spool.corrupt-*"))
    spool.close()


class _CorruptConnection:
    """A connection whose disk went bad under it: every statement fails the way SQLite reports corruption."""

    def __init__(self, real: sqlite3.Connection):
        self.real = real
        self.in_transaction = False

    def execute(self, *args: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        self.real.close()


def test_corruption_found_at_run_time_costs_the_queue_not_the_daemon(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=1000)
    spool.append("t", b"before", 1)
    spool._conn = _CorruptConnection(spool._conn)
    spool.append("t", b"after", 1)
    assert [m.payload for m in spool.peek(10)] == [b"after"]
    assert spool.depth() == 1
    assert list(tmp_path.glob("spool.corrupt-*"))
    spool.close()


def test_ids_and_seqs_continue_after_corruption_found_at_run_time(tmp_path):
    """Consumers de-duplicate by seq and the drainer reads ids after the last one it sent: a replaced file must
    not restart either numbering at 1."""
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_messages=5)
    old_ids = spool.append_many([("t", str(i).encode(), 1, False) for i in range(8)])  # 3 dropped
    spool.ack(old_ids[-2:])  # the newest rows are gone from the table: the max id lives in sqlite_sequence only
    assert spool.next_seqs("activity", 7) == range(1, 8)
    assert spool.next_seq("other") == 1
    spool._conn = _CorruptConnection(spool._conn)
    new_id = spool.append("t", b"after", 1)
    assert new_id > max(old_ids)
    assert [m.payload for m in spool.peek(10, after_id=max(old_ids))] == [b"after"]  # the drainer's next peek
    assert spool.next_seq("activity") == 8
    assert spool.next_seq("other") == 2
    assert spool.next_seq("new") == 1
    assert spool.dropped() == 3
    assert list(tmp_path.glob("spool.corrupt-*"))
    spool.close()
    reopened = Spool(path, max_messages=5)  # and the seeded numbering is in the new file, across a restart
    assert reopened.append("t", b"later", 1) > new_id
    assert reopened.next_seq("activity") == 9
    reopened.close()


def test_seqs_continue_when_corruption_is_found_while_reserving_them(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", max_messages=100)
    assert spool.next_seqs("activity", 3) == range(1, 4)
    spool._conn = _CorruptConnection(spool._conn)
    assert spool.next_seqs("activity", 2) == range(4, 6)
    spool.close()
