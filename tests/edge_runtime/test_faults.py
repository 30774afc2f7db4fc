"""Faults on real processes: a network that stalls and then drops (a loopback proxy), the spool's disk full, a
model that returns NaN. Predictions are at least once with `seq`: none lost, duplicates detectable (broker kills
and SIGKILL of the daemon are in test_daemon_durability.py and test_mqtt_link.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

import numpy as np
import pytest

from tests.edge_runtime.test_daemon_durability import assert_complete_and_ordered
from tests.edge_runtime.test_model_worker import (
    FEATURES,
    Errors,
    FakeModel,
    Published,
    card,
    make_worker,
)
from tests.support.broker import Collector, MosquittoBroker
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.proxy import FaultyProxy

DEVICE = "dev-1"


class NanModel(FakeModel):
    """Returns NaN for every other window."""

    def run(self, inputs: dict) -> dict:
        outputs = super().run(inputs)
        y = outputs["y"].copy()
        y[::2] = np.nan
        return {"y": y}


def test_a_model_that_returns_nan_publishes_only_finite_predictions_and_counts_the_rest():
    published, errors = Published(), Errors()
    worker = make_worker(NanModel(card(FEATURES)), publish=published, errors=errors, max_batch=4)
    worker.start()
    from edge_runtime.stream import SampleBlock

    for index in range(8):
        worker.accept(SampleBlock(ts=np.array([1000.0 + index]), values=np.ones((1, 3), dtype=np.float32)))
    assert wait_until(lambda: published.count() + sum(1 for r, _ in errors.reports if r == "non_finite_output")
                      >= 5, 10)
    documents = [json.loads(p) for p in published.payloads]
    assert documents and all(np.isfinite(d["score"]) for d in documents)
    assert any(reason == "non_finite_output" for reason, _ in errors.reports)
    seqs = [d["seq"] for d in documents]
    worker.stop(drain=False, timeout=5)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a NaN window used up a seq"


@pytest.mark.broker
def test_a_stalled_then_cut_connection_loses_nothing(tmp_path, activity_bundle, activity_recording):
    broker = MosquittoBroker()
    proxy = FaultyProxy(broker.port)
    try:
        with Collector(broker.port, f"edge/{DEVICE}/predictions/#") as collector:
            config = write_config(tmp_path / "daemon.yaml", broker_url=proxy.url, bundle=activity_bundle,
                                  source={"type": "replay", "path": str(activity_recording), "speed": 100})
            daemon = DaemonProcess(config, "--exit-when-done")
            try:
                assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= 20, 30), \
                    daemon.output()
                proxy.stall()  # the network hangs: bytes go nowhere, nothing is acknowledged
                time.sleep(2.0)  # the fault lasts this long; the replay goes on into the spool
                proxy.cut()  # then it drops
                proxy.resume()
                assert daemon.wait(90) == 0, daemon.output()
            finally:
                daemon.close()
            assert proxy.connections >= 2, "the daemon never reconnected"
            assert wait_until(lambda: len({p["seq"] for p in messages(collector, "/predictions/activity")}) >= 396,
                              20)
            assert_complete_and_ordered(messages(collector, "/predictions/activity"))
    finally:
        proxy.close()
        broker.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the spool (root only: skipped where mount is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.broker
def test_a_full_spool_disk_costs_predictions_not_the_daemon(tmp_path, small_disk, activity_bundle,
                                                            activity_recording):
    """Broker away, the spool fills its disk: the predictions that cannot be stored are counted, the daemon stays
    up, and once the broker is back the spool drains, frees its disk and the stream goes on."""
    broker = MosquittoBroker(start=False)
    try:
        config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                              spool=small_disk / "spool.sqlite",
                              source={"type": "replay", "path": str(activity_recording), "speed": 200, "loop": True})
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: "publish failed" in daemon.output(), 90), daemon.output()
            assert daemon.process.poll() is None, daemon.output()
            broker.start()
            with Collector(broker.port, f"edge/{DEVICE}/#") as collector:
                assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= 50, 60), \
                    daemon.output()
                failed = lambda: [s for s in messages(collector, "/stats")  # noqa: E731
                                  if s["models"]["activity"].get("invalid", 0) > 0]
                assert wait_until(failed, 30), daemon.output()
                count = len(messages(collector, "/predictions/activity"))
                assert wait_until(lambda: len(messages(collector, "/predictions/activity")) > count + 20, 30)
                seqs = list(dict.fromkeys(p["seq"] for p in messages(collector, "/predictions/activity")))
                assert seqs == sorted(seqs), "predictions out of order after the disk filled"
            assert daemon.process.poll() is None, daemon.output()
        finally:
            with contextlib.suppress(Exception):
                daemon.terminate()
            daemon.close()
    finally:
        broker.close()
