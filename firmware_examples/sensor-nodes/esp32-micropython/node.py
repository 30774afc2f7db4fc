"""The sensor node's loop, written for MicroPython and kept free of `machine` and `network` so the same file also
runs under CPython in the tests (tests/firmware_examples/test_micropython_node.py).

Samples are read at `rate_hz` and published in the daemon's batch format,
    {"ts": <unix time of the first sample>, "samples": [[ax, ay, az, gx, gy, gz], ...]},
every `batch` samples. MQTT keepalive: when nothing was sent for half the keepalive, the node pings, so the broker
never drops it between batches. A send that fails (Wi-Fi gone, broker restarted) reconnects and sends the same
batch again; umqtt.robust retries its own publish the same way.
"""

import json
import time

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython (the tests)
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(ticks, delta):
        return ticks + delta

    def ticks_diff(end, start):
        return end - start

    def sleep_ms(ms):
        time.sleep(ms / 1000)

# MicroPython on the ESP32 counts time from 2000-01-01; the daemon wants Unix time.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def batch_message(first_ts, samples):
    return json.dumps({"ts": first_ts, "samples": samples})


class SensorNode:
    def __init__(self, client, topic, read, rate_hz=10, batch=10, keepalive_s=30, retry_ms=2000):
        self.client = client
        self.topic = topic.encode() if isinstance(topic, str) else topic
        self.read = read
        self.period_ms = int(1000 / rate_hz)
        self.batch = batch
        self.ping_every_ms = keepalive_s * 1000 // 2
        self.retry_ms = retry_ms
        self.sent = 0
        self.pings = 0
        self.reconnects = 0
        self._last_send = ticks_ms()

    def now(self):
        return time.time() + EPOCH_OFFSET

    def _send(self, message):
        while True:
            try:
                self.client.publish(self.topic, message.encode(), qos=1)
                break
            except OSError:
                self._reconnect()
        self.sent += 1
        self._last_send = ticks_ms()

    def _reconnect(self):
        while True:
            sleep_ms(self.retry_ms)
            try:
                self.client.connect(clean_session=True)
                self.reconnects += 1
                return
            except OSError:
                continue

    def keep_alive(self):
        """Ping when nothing went out for half the keepalive."""
        if ticks_diff(ticks_ms(), self._last_send) >= self.ping_every_ms:
            try:
                self.client.ping()
            except OSError:
                self._reconnect()
            self.pings += 1
            self._last_send = ticks_ms()

    def run(self, count=0):
        """Sample and publish forever (or `count` samples); every batch is sent before the next is started."""
        samples, first_ts, taken = [], 0.0, 0
        deadline = ticks_ms()
        while not count or taken < count:
            if not samples:
                first_ts = self.now()
            samples.append([round(value, 5) for value in self.read()])
            taken += 1
            if len(samples) == self.batch or taken == count:
                self._send(batch_message(first_ts, samples))
                samples = []
            deadline = ticks_add(deadline, self.period_ms)
            while ticks_diff(deadline, ticks_ms()) > 0:
                self.keep_alive()
                sleep_ms(min(50, max(0, ticks_diff(deadline, ticks_ms()))))
