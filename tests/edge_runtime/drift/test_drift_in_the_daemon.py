"""The daemon publishes drift on `edge/<device>/drift/<model>`: periodically, and at once when a sensor fault
in the replayed held-out recording turns the state to drift; `stats` carries the state too."""

from __future__ import annotations

import csv

import numpy as np

from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config


def faulty_recording(source, target, *, channel: int, offset: float, start: int):
    with open(source) as handle:
        rows = list(csv.reader(handle))
    for row in rows[1 + start :]:
        row[1 + channel] = f"{float(row[1 + channel]) + offset:.6g}"
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return target


def run_replay(tmp_path, broker, bundle, recording) -> tuple[list[dict], list[dict], DaemonProcess]:
    config = write_config(tmp_path / f"{recording.stem}.yaml", broker_url=broker.url, bundle=bundle,
                          source={"type": "replay", "path": str(recording), "speed": 100},
                          model={"drift": {"interval_s": 0.2}}, spool=tmp_path / f"{recording.stem}.sqlite")
    with Collector(broker.port, "edge/dev-1/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(60) == 0, daemon.output()
        assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= 396, 10)
    return messages(collector, "/drift/activity"), messages(collector, "/stats"), daemon


def test_clean_replay_stays_ok(tmp_path, broker, activity_bundle, activity_recording):
    drift, stats, daemon = run_replay(tmp_path, broker, activity_bundle, activity_recording)
    assert drift, daemon.output()
    assert {report["state"] for report in drift} == {"ok"}
    report = drift[-1]
    assert set(report["channels"]) == {"acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"}
    assert report["window"]["size"] > 0 and report["outputs"]["class_mix"]["counts_toward_state"] is False
    assert any(s["models"]["activity"]["drift"]["state"] == "ok" for s in stats)


def test_offset_in_one_channel_turns_drift_and_names_the_channel(tmp_path, broker, activity_sample, activity_bundle,
                                                                  activity_recording):
    std = np.asarray(__import__("yaml").safe_load(activity_sample.card_path.read_text())["input"]["normalize"]["std"])
    faulty = faulty_recording(activity_recording, tmp_path / "faulty.csv", channel=3, offset=1.0 * std[3],
                              start=2100)
    drift, stats, daemon = run_replay(tmp_path, broker, activity_bundle, faulty)
    states = [report["state"] for report in drift]
    assert "drift" in states, (states, daemon.output())
    first = next(report for report in drift if report["state"] == "drift")
    assert first["top_channels"][0] == "gyro_x" and first["reasons"]
    assert states.index("drift") > 0 and states[0] == "ok"  # it was fine before the fault
