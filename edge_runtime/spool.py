"""The on-disk outbox: every outgoing message is written here first, so nothing is lost while the broker or the
network is away, nor when the daemon restarts or is killed.

SQLite in WAL mode with `synchronous=NORMAL`: a committed row is in the WAL file before `append` returns, so it
survives a SIGKILL of the process (a power cut may lose the last few commits; `FULL` would fsync every message).
Row ids come from AUTOINCREMENT, so they only ever grow: the MQTT drainer sends in id order and acks a prefix.

The spool is bounded: beyond `max_messages` the oldest rows are deleted and counted in `dropped`, a counter that,
like the per-key `seq` counters, lives in the same file and survives restarts. One process owns a spool file.

Integrity: SQLite does not checksum its pages, so every row carries a CRC-32 of its topic and payload, checked
whenever a row is read: a row damaged on disk is never sent (it is deleted, counted in `corrupt` and logged). At
open, `PRAGMA quick_check` checks the file's structure; a damaged file is moved aside (kept, for a post-mortem) and
a new one takes its place, into which every row that can still be read and whose CRC matches is copied (with the
seq counters and the dropped count): what is recoverable is not lost. The error log names both files.

A file damaged at run time is moved aside and a new, empty one takes its place. Its queued messages are lost, but
the numbering must not restart: consumers de-duplicate by `seq`, and the MQTT drainer reads "ids after the last
one sent". So the spool keeps in memory the highest message id, every `seq` counter and `dropped`, and seeds a
file it had to replace at run time with them: ids and seqs continue. A file already damaged when the spool is
opened (at daemon start) leaves nothing in memory to seed from: ids and seqs then restart at 1.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("edge_runtime.spool")

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# SQLITE_CORRUPT and SQLITE_NOTADB: the file is damaged, not merely busy or full.
_CORRUPTION_CODES = {11, 26}
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


@dataclass(frozen=True)
class SpooledMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


def row_crc(topic: str, payload: bytes) -> int:
    """What a row's `crc` column holds: CRC-32 of the topic, a zero byte and the payload."""
    return zlib.crc32(payload, zlib.crc32(topic.encode("utf-8", "surrogateescape") + b"\0"))


def _intact(topic: object, payload: object, qos: object, retain: object, crc: object) -> bool:
    """A row as written: the right types, and its CRC (rows of a file from before the CRC column have none)."""
    if not isinstance(topic, str) or not isinstance(payload, bytes) or qos not in (0, 1, 2) or retain not in (0, 1):
        return False
    return crc is None or crc == row_crc(topic, payload)


def _is_full(error: sqlite3.DatabaseError) -> bool:
    """SQLITE_FULL: the disk (or the file size limit) is full."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == 13
    return "disk is full" in str(error).lower()


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _CORRUPTION_CODES
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


CHECKPOINT_INTERVAL_S = 1.0
#: space set aside next to the spool, given up when the disk is full so the log can be checkpointed (see _make_room)
RESERVE_BYTES = 256 * 1024
#: the write-ahead log is truncated to this after a checkpoint (it otherwise keeps its largest size)
WAL_LIMIT_BYTES = 4 * 1024 * 1024


class Spool:
    """A bounded, thread-safe SQLite outbox (one connection guarded by a lock)."""

    def __init__(self, path: Path, max_messages: int):
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        # What a replacement file is seeded with after run-time corruption (see the module docstring).
        self._max_id = 0
        self._seqs: dict[str, int] = {}
        self._dropped = 0
        self.corrupt = 0  # rows found damaged (not sent), since this process opened the spool
        self.full = 0  # writes that found the disk full
        self._reserve = Path(f"{self.path}.reserve")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn, self._depth = self._open()
            self._check_integrity(self._conn)
            self._remember(self._conn)
        except sqlite3.DatabaseError as error:
            # A damaged file is moved aside: the daemon must come up, with an empty outbox. Other errors
            # (permissions, a full disk) are the operator's to fix and are raised. Nothing is known of the old
            # numbering here, so ids and seqs restart at 1.
            if not _is_corruption(error):
                raise
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._conn.close()
            aside = self._move_aside(error)
            self._conn, self._depth = self._open()
            self._salvage(aside)
        self._keep_reserve()
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="spool-checkpoint", daemon=True)
        self._checkpointer.start()

    # -- opening and recovery -----------------------------------------------------------------------------------
    def _open(self) -> tuple[sqlite3.Connection, int]:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # No checkpoints on the publishing path: a checkpoint fsyncs, which put tens of milliseconds into the
            # p99 latency of predictions. A background thread checkpoints instead (see _checkpoint_loop).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)").fetchall()}
            if "crc" not in columns:  # a file from before row checksums: its rows stay readable, unchecked
                conn.execute("ALTER TABLE messages ADD COLUMN crc INTEGER")
            (depth,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn, depth

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """`PRAGMA quick_check` and the CRC of every row; raise SQLITE_CORRUPT-like DatabaseError if damaged."""
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems)[:300]}")
        bad = [row_id for row_id, *row in conn.execute("SELECT id, topic, payload, qos, retain, crc FROM messages")
               if not _intact(*row)]
        if bad:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {len(bad)} message(s) fail their CRC")

    def _salvage(self, damaged: Path | None) -> None:
        """Copy what can still be read from a damaged file into the new one: intact rows (by id, one at a time, so
        one bad page costs its rows only), the seq counters, the dropped count and the id sequence."""
        if damaged is None:
            return
        rows: list[tuple] = []
        lost = 0
        try:
            source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return
        try:
            for query, target in (("SELECT key, value FROM seqs", self._seqs),):
                with contextlib.suppress(sqlite3.Error):
                    target.update({k: v for k, v in source.execute(query).fetchall()
                                   if isinstance(k, str) and isinstance(v, int)})
            with contextlib.suppress(sqlite3.Error, TypeError):
                (value,) = source.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
                self._dropped = max(self._dropped, int(value))
            with contextlib.suppress(sqlite3.Error, TypeError):
                (value,) = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                self._max_id = max(self._max_id, int(value))
            for row_id in self._salvage_ids(source):
                try:
                    row = source.execute("SELECT id, topic, payload, qos, retain, crc FROM messages WHERE id = ?",
                                         (row_id,)).fetchone()
                except sqlite3.Error:
                    lost += 1
                    continue
                if row is None or not _intact(*row[1:]):
                    lost += 1
                    continue
                rows.append(row)
                self._max_id = max(self._max_id, int(row_id))
        finally:
            source.close()
        self._seed(self._conn)
        if rows:
            def copy(conn: sqlite3.Connection) -> None:
                conn.executemany("INSERT INTO messages (id, topic, payload, qos, retain, crc) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._depth += len(rows)

            with self._lock:
                self._transaction(copy)
        log.error("spool %s was damaged: %d message(s) recovered from %s, %d lost; ids and seqs continue", self.path,
                  len(rows), damaged, lost)

    def _salvage_ids(self, source: sqlite3.Connection) -> list[int]:
        """The ids to try: a scan in id order as far as it gets, then (past a damaged page) every id up to the
        highest ever given, at most `max_messages` of them (the spool never holds more)."""
        ids: list[int] = []
        try:
            for (row_id,) in source.execute("SELECT id FROM messages ORDER BY id"):
                ids.append(int(row_id))
            return ids
        except (sqlite3.Error, TypeError, ValueError):
            pass
        end = self._max_id
        start = max(ids[-1] + 1 if ids else 1, end - self.max_messages + 1)
        return ids + list(range(start, end + 1))

    def _remember(self, conn: sqlite3.Connection) -> None:
        """Load the numbering of a file that opened fine into memory."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        (max_row,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        self._max_id = max(row[0] if row else 0, max_row)
        self._seqs = dict(conn.execute("SELECT key, value FROM seqs").fetchall())
        row = conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        self._dropped = row[0] if row else 0

    def _seed(self, conn: sqlite3.Connection) -> None:
        """Carry the remembered numbering into a fresh file, so ids and seqs continue where they were."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._max_id:
                # sqlite_sequence has a row for `messages` only once a row was inserted: replace whatever is there
                conn.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (self._max_id,))
            conn.executemany("INSERT OR REPLACE INTO seqs (key, value) VALUES (?, ?)", list(self._seqs.items()))
            if self._dropped:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped', ?)", (self._dropped,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.warning("spool %s: the new file continues after message id %d and %d seq counter(s)", self.path,
                    self._max_id, len(self._seqs))

    def _move_aside(self, error: Exception) -> Path | None:
        target = self.path.with_suffix(f".corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}")
        log.warning("spool %s is unreadable (%s): moved to %s, starting a new file", self.path, error, target)
        moved = None
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{target}{suffix}"))
                moved = target
        return moved

    def _run(self, operation: Callable[[sqlite3.Connection], _T], frees_space: bool = False) -> _T:
        """Run one transaction under the lock; a file found corrupt at run time is moved aside and the
        operation retried once on a fresh spool, so a damaged disk costs the queued messages, not the daemon."""
        with self._lock:
            try:
                return self._transaction(operation)
            except sqlite3.DatabaseError as error:
                if _is_full(error) and self._make_room(use_reserve=frees_space):
                    return self._transaction(operation)  # raises again if the disk is still full
                if not _is_corruption(error):
                    raise
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._move_aside(error)
                self._conn, self._depth = self._open()
                self._seed(self._conn)
                return self._transaction(operation)

    def _make_room(self, use_reserve: bool) -> bool:
        """The disk is full: move the write-ahead log into the database and truncate it (with checkpoints off the
        publishing path the log can hold many more pages than the rows it carries). A delete (`ack`) may also use
        the reserve, a file of RESERVE_BYTES the spool keeps next to itself: a delete needs log space too, and
        without it a full disk would never drain, even once the broker is back. New messages never use the
        reserve: they fail (the caller counts them) until acks have made room."""
        self.full += 1
        if self.full == 1 or self.full % 1000 == 0:
            log.warning("spool %s: disk full (%d times so far)", self.path, self.full)
        if use_reserve:
            self._reserve.unlink(missing_ok=True)
        try:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as error:
            log.debug("spool %s: disk full and the log cannot be checkpointed: %s", self.path, error)
            return use_reserve  # the reserve alone may be enough for a delete
        return not busy or use_reserve

    def _keep_reserve(self) -> None:
        """(Re)create the reserve file; on a full disk it waits for the next chance."""
        if self._reserve.exists():
            return
        try:
            with open(self._reserve, "wb") as handle:
                handle.write(bytes(RESERVE_BYTES))
        except OSError:
            self._reserve.unlink(missing_ok=True)

    def _transaction(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        depth = self._depth
        try:
            result = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._depth = depth
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _checkpoint_loop(self) -> None:
        """Copy the write-ahead log into the database once a second from a connection of its own.

        PASSIVE checkpoints never block the writer, so appends stay fast; the WAL is still what makes a
        committed row survive a SIGKILL, whether or not it has been checkpointed.
        """
        while not self._closing.wait(CHECKPOINT_INTERVAL_S):
            try:
                with contextlib.closing(sqlite3.connect(self.path, timeout=1.0)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as error:  # a busy or moved-aside file: try again next time
                log.debug("spool checkpoint skipped: %s", error)

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join(5)
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    # -- messages -------------------------------------------------------------------------------------------------
    def append(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Store one message; returns its id. Drops (and counts) the oldest beyond `max_messages`."""
        return self.append_many([(topic, payload, qos, retain)])[0]

    def append_many(self, rows: Iterable[tuple[str, bytes, int, bool]]) -> list[int]:
        """Store several messages in one transaction (one commit instead of one per message)."""
        rows = [(topic, bytes(payload), int(qos), 1 if retain else 0, row_crc(topic, bytes(payload)))
                for topic, payload, qos, retain in rows]

        def insert(conn: sqlite3.Connection) -> list[int]:
            ids = []
            for row in rows:
                cursor = conn.execute("INSERT INTO messages (topic, payload, qos, retain, crc) VALUES (?, ?, ?, ?, ?)",
                                      row)
                ids.append(cursor.lastrowid)
            self._depth += len(rows)
            excess = self._depth - self.max_messages
            dropped = None
            if excess > 0:
                conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
                             (excess,))
                conn.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (excess,))
                (dropped,) = conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
                self._depth -= excess
            # Remembered before the commit: if the commit fails, a number is skipped, never reused.
            self._max_id = max(self._max_id, ids[-1])
            if dropped is not None:
                self._dropped = max(self._dropped, dropped)
            return ids

        return self._run(insert) if rows else []

    def peek(self, limit: int, after_id: int = 0) -> list[SpooledMessage]:
        """Up to `limit` messages with ids above `after_id`, oldest first; nothing is removed."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, topic, payload, qos, retain, crc FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        damaged = [row[0] for row in rows if not _intact(*row[1:])]
        if damaged:  # never sent: deleted and counted (the CRC says the disk changed them)
            log.error("spool %s: %d message(s) damaged on disk (CRC mismatch), not sent: ids %s", self.path,
                      len(damaged), damaged[:10])
            self.corrupt += len(damaged)
            self.ack(damaged)
        return [SpooledMessage(row_id, topic, bytes(payload), qos, bool(retain))
                for row_id, topic, payload, qos, retain, _crc in rows if row_id not in damaged]

    def ack(self, ids: Iterable[int]) -> None:
        """Delete delivered messages; ids already dropped or acked are ignored."""
        params = [(i,) for i in ids]

        def delete(conn: sqlite3.Connection) -> None:
            cursor = conn.executemany("DELETE FROM messages WHERE id = ?", params)
            self._depth -= max(cursor.rowcount, 0)

        if params:
            self._run(delete, frees_space=True)
            self._keep_reserve()

    def depth(self) -> int:
        with self._lock:
            return self._depth

    def dropped(self) -> int:
        """Messages deleted unsent because the spool was full, since the file was created."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return row[0] if row else 0

    # -- sequence numbers -----------------------------------------------------------------------------------------
    def next_seq(self, key: str) -> int:
        """The next number of a persistent counter (1, 2, ...): prediction `seq` keeps growing across restarts."""
        return self.next_seqs(key, 1).start

    def next_seqs(self, key: str, n: int) -> range:
        """Reserve `n` consecutive numbers of the counter `key` in one commit."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        upsert = ("INSERT INTO seqs (key, value) VALUES (?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value")

        def reserve(conn: sqlite3.Connection) -> int:
            if _HAS_RETURNING:
                last = conn.execute(upsert + " RETURNING value", (key, n)).fetchall()[0][0]
            else:
                conn.execute(upsert, (key, n))  # SQLite < 3.35 (e.g. Debian 11): same transaction, two statements
                last = conn.execute("SELECT value FROM seqs WHERE key = ?", (key,)).fetchone()[0]
            self._seqs[key] = max(self._seqs.get(key, 0), last)
            return last

        last = self._run(reserve)
        return range(last - n + 1, last + 1)
