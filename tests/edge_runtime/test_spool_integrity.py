"""The spool checks what it serves: a row changed on disk (SQLite does not checksum pages) fails its CRC and is
never sent; a file whose structure is damaged is moved aside at open and every row that can still be read is
copied into the new one, with the numbering."""

from __future__ import annotations

import logging
import sqlite3

from edge_runtime.spool import Spool


def payload(index: int) -> bytes:
    return f"<<message {index:04d}>>".encode() * 8


def filled(path, count: int = 200) -> None:
    spool = Spool(path, max_messages=10_000)
    spool.append_many([("edge/d/predictions/m", payload(i), 1, False) for i in range(count)])
    spool.next_seqs("m", 200)
    spool.close()


def test_a_row_changed_on_disk_is_not_sent(tmp_path, caplog):
    path = tmp_path / "spool.sqlite"
    filled(path)
    data = bytearray(path.read_bytes())
    where = data.find(payload(57))
    assert where > 0
    data[where + 3] ^= 0x20  # one bit, inside a payload: SQLite itself would serve it
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="edge_runtime.spool"):
        spool = Spool(path, max_messages=10_000)
    served = [m.payload for m in spool.peek(1000)]
    assert len(served) == 199 and payload(57) not in served and all(p in served for p in (payload(56), payload(58)))
    assert "1 lost" in caplog.text and "recovered" in caplog.text
    assert spool.next_seqs("m", 1).start == 201, "the seq counter restarted"
    spool.close()


def test_a_damaged_page_is_salvaged_at_open(tmp_path, caplog):
    path = tmp_path / "spool.sqlite"
    filled(path, 400)
    with sqlite3.connect(path) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    middle = (pages // 2) * size
    data[middle:middle + 16] = b"\xff" * 16  # a b-tree page header in the middle of the messages
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="edge_runtime.spool"):
        spool = Spool(path, max_messages=10_000)
    served = [m.payload for m in spool.peek(1000)]
    assert 300 <= len(served) < 400, len(served)  # the rows of the damaged page, and only those, are lost
    assert served == [p for p in (payload(i) for i in range(400)) if p in served]  # in order
    assert list(tmp_path.glob("spool.corrupt-*")), "the damaged file was not kept"
    assert "damaged" in caplog.text
    new_id = spool.append("t", b"after", 1)
    assert new_id > 400, "ids restarted after the salvage"
    spool.close()
