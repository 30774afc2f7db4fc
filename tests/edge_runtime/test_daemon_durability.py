"""Nothing lost, nothing out of order: across a broker restart and across SIGKILL of the daemon."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.support.broker import Collector, MosquittoBroker
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

DEVICE = "dev-1"
EXPECTED = 396  # 4,000 recorded samples, window 50, hop 10


def assert_complete_and_ordered(predictions: list[dict]) -> None:
    """At-least-once: duplicates after a reconnect are allowed, gaps and reordering are not."""
    seqs = [p["seq"] for p in predictions]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen), "predictions arrived out of order"
    assert first_seen == list(range(first_seen[0], first_seen[0] + EXPECTED)), (
        f"missing: {sorted(set(range(first_seen[0], first_seen[0] + EXPECTED)) - set(seqs))[:10]}"
    )


def spooled_predictions(spool) -> int:
    try:
        with sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=1) as conn:
            tables = [row[0] for row in conn.execute("select name from sqlite_master where type='table'")]
            table = next(name for name in tables if name not in ("meta", "seqs", "sqlite_sequence"))
            return conn.execute(f"select count(*) from {table} where topic like '%/predictions/%'").fetchone()[0]
    except (sqlite3.Error, StopIteration):
        return 0


@pytest.mark.broker
def test_broker_restart_mid_stream_loses_nothing(tmp_path, activity_bundle, activity_recording):
    broker = MosquittoBroker(persistence=True)  # the collector's session survives the restart
    try:
        collector = Collector(broker.port, f"edge/{DEVICE}/predictions/#", client_id="durable-collector",
                              clean_session=False)
        config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                              source={"type": "replay", "path": str(activity_recording), "speed": 100})
        daemon = DaemonProcess(config, "--exit-when-done")
        try:
            assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= 20, 30), daemon.output()
            broker.stop()  # a broker outage in the middle of the stream
            time.sleep(1.5)  # the replay goes on; predictions pile up in the spool
            broker.start()
            assert daemon.wait(60) == 0, daemon.output()
        finally:
            daemon.close()
        assert wait_until(lambda: len({p["seq"] for p in messages(collector, "/predictions/activity")}) >= EXPECTED,
                          20)
        assert_complete_and_ordered(messages(collector, "/predictions/activity"))
        collector.close()
    finally:
        broker.close()


@pytest.mark.broker
def test_sigkill_of_the_daemon_loses_nothing(tmp_path, activity_bundle, activity_recording):
    broker = MosquittoBroker(start=False)  # down from the start: everything goes to the spool
    spool = tmp_path / "spool.sqlite"
    try:
        config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                              source={"type": "replay", "path": str(activity_recording), "speed": 0}, spool=spool)
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: spooled_predictions(spool) >= EXPECTED, 60), daemon.output()
            daemon.kill()  # SIGKILL: no drain, no goodbye
        finally:
            daemon.close()
        broker.start()
        with Collector(broker.port, f"edge/{DEVICE}/predictions/#") as collector:
            # a new daemon on the same spool, with a source that sends nothing new
            restart = write_config(tmp_path / "restart.yaml", broker_url=broker.url, bundle=activity_bundle,
                                   source={"type": "mqtt", "topic": "sensors/none"}, spool=spool)
            again = DaemonProcess(restart)
            try:
                assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= EXPECTED, 30), (
                    again.output())
                assert again.terminate() == 0
            finally:
                again.close()
            assert_complete_and_ordered(messages(collector, "/predictions/activity"))
    finally:
        broker.close()


def test_seq_keeps_increasing_across_restarts(tmp_path, broker, activity_bundle, activity_recording):
    spool = tmp_path / "spool.sqlite"
    seen = []
    with Collector(broker.port, f"edge/{DEVICE}/predictions/#") as collector:
        for run in range(2):
            config = write_config(tmp_path / f"run{run}.yaml", broker_url=broker.url, bundle=activity_bundle,
                                  source={"type": "replay", "path": str(activity_recording), "speed": 0},
                                  spool=spool)
            daemon = DaemonProcess(config, "--exit-when-done")
            assert daemon.wait(60) == 0, daemon.output()
            assert wait_until(lambda n=run: len(messages(collector, "/predictions/activity")) >= EXPECTED * (n + 1),
                              10)
        seen = [p["seq"] for p in messages(collector, "/predictions/activity")]
    assert seen == sorted(seen) and len(set(seen)) == 2 * EXPECTED
