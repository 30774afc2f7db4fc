"""`edge-fleet simulate`: the daemon's topics, predictions at QoS 1 numbered without gaps, `stopped` on SIGTERM,
last wills on SIGKILL."""

from __future__ import annotations

import json
from collections import defaultdict

from edge_fleet.monitor import wait_for
from tests.support.broker import Collector
from tests.support.fleet_sim import SimulatorProcess, in_state, online, running_monitor


def test_predictions_arrive_numbered_without_gaps_and_a_clean_end_says_stopped(broker, tmp_path):
    devices, report_path = 20, tmp_path / "report.json"
    with Collector(broker.port, "edge/+/predictions/+", qos=1) as predictions, \
            running_monitor(broker.url) as (monitor, state), \
            SimulatorProcess(broker.url, devices, "--rate-hz", "5", "--duration", "3", report=report_path) as sim:
        assert sim.wait(30) == 0, sim.output()
        report = json.loads(report_path.read_text())
        assert report["devices"] == devices and report["predictions"] > 0
        assert wait_for(lambda: len(predictions.snapshot()) >= report["predictions"], 10)
        seqs = defaultdict(list)
        for topic, payload, _ in predictions.snapshot():
            body = json.loads(payload)
            assert set(body) >= {"seq", "ts", "model", "label", "score", "latency_ms"}
            seqs[topic.split("/")[1]].append(body["seq"])
        assert {device: sorted(set(got)) for device, got in seqs.items()} == {
            device: list(range(1, last + 1)) for device, last in report["seq"].items()}
        assert wait_for(lambda: in_state(state, "stopped") == devices, 10)
        assert monitor.stats()["received"]["stats"] > 0
        assert state.snapshot()["garbage"] == 0 and state.snapshot()["unknown_schema"] == 0


def test_sigterm_publishes_stopped_and_sigkill_leaves_the_wills(broker):
    with running_monitor(broker.url) as (_, state):
        with SimulatorProcess(broker.url, 5, "--keepalive", "2") as clean:
            assert wait_for(lambda: online(state) == 5, 20), clean.output()
            assert clean.terminate() == 0
            assert wait_for(lambda: in_state(state, "stopped") == 5, 10)
        with SimulatorProcess(broker.url, 5, "--keepalive", "2", "--id-prefix", "crash") as crash:
            assert wait_for(lambda: online(state) == 5, 20), crash.output()
            crash.kill()
            assert wait_for(lambda: in_state(state, "offline") == 5, 3)
            assert in_state(state, "stopped") == 5  # the first five stay as they ended


def test_statuses_carry_group_board_and_retained_flag(broker):
    with Collector(broker.port, "edge/+/status") as statuses, SimulatorProcess(
            broker.url, 3, "--group", "lab") as sim:
        assert statuses.wait_for(lambda messages: len(messages) >= 3, 20), sim.output()
        for _, payload, _ in statuses.snapshot():
            body = json.loads(payload)
            assert body["state"] == "online" and body["schema"] == 1 and body["group"] == "lab"
            assert body["board"] and body["models"][0]["name"] == "activity"
    with Collector(broker.port, "edge/+/status") as late:  # a late subscriber gets them as retained messages
        assert late.wait_for(lambda messages: len(messages) >= 3, 10)
        assert all(retained for _, _, retained in late.snapshot())
