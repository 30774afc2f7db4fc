"""Two bridged mosquitto brokers: devices connect to broker A, the monitor to broker B, and the monitor still sees
them appear, report and die. The small model of a fleet spread over several brokers (docs/fleet-scaling.md)."""

from __future__ import annotations

import pytest

from edge_fleet.monitor import wait_for
from tests.support.broker import Collector, MosquittoBroker
from tests.support.fleet_sim import SimulatorProcess, in_state, online, running_monitor
from tests.support.tiers import tier

KEEPALIVE = 2


def bridge_config(remote_port: int) -> list[str]:
    return [
        "connection b1",
        f"address 127.0.0.1:{remote_port}",
        "topic edge/# both 1",
        "cleansession true",
        "bridge_protocol_version mqttv50",
        "restart_timeout 1",
        "keepalive_interval 5",
    ]


@pytest.fixture
@tier("broker")
def bridged():
    """(A, B): B bridges `edge/#` both ways to A."""
    with MosquittoBroker() as a, MosquittoBroker(extra_config=bridge_config(a.port)) as b:
        # the bridge connects in the background; wait until a message published on A shows up on B
        from tests.support.broker import Collector

        with Collector(b.port, "edge/bridge-probe") as probe:
            import paho.mqtt.publish as publish

            def crossed() -> bool:
                publish.single("edge/bridge-probe", b"x", qos=1, hostname="127.0.0.1", port=a.port)
                return probe.wait_for(lambda messages: len(messages) > 0, timeout=0.5)

            assert wait_for(crossed, 15), b.log.read_text()
        yield a, b


def test_monitor_on_the_other_broker_sees_devices_appear_and_die(bridged):
    a, b = bridged
    devices = 20
    with running_monitor(b.url) as (monitor, state), SimulatorProcess(
            a.url, devices, "--keepalive", str(KEEPALIVE), "--rate-hz", "2") as sim:
        assert wait_for(lambda: online(state) == devices, 20), sim.output()
        assert wait_for(lambda: monitor.stats()["received"]["stats"] >= devices, 10)
        sim.kill()
        assert wait_for(lambda: in_state(state, "offline") == devices, 1.5 * KEEPALIVE)  # killed: wills at once


def test_retained_status_crosses_the_bridge_for_a_monitor_that_starts_later(bridged):
    a, b = bridged
    devices = 10
    with SimulatorProcess(a.url, devices, "--keepalive", str(KEEPALIVE)) as sim:
        with running_monitor(a.url) as (_, on_a):
            assert wait_for(lambda: online(on_a) == devices, 20), sim.output()
        # the bridge forwards the retained statuses to B, which keeps them: a sentinel published on A after them
        # reaches B after them, so once it is there the late monitor can only have them from B's retained store
        with Collector(b.port, "edge/sentinel") as on_b:
            assert on_b.sync(via_port=a.port)
        with running_monitor(b.url) as (_, late):
            assert wait_for(lambda: online(late) == devices, 10)
