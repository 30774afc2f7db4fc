"""Runs the ESP32 node's own files (mpu6050.py, node.py) under CPython: a fake I2C bus serves MPU-6050 register
bursts encoded from a real recording, umqtt comes from this folder's stand-in, the broker is the real one.

    python run_node.py NODE_DIR --port P --topic T --recording CSV --count N --rate HZ --batch B --keepalive S
Prints one JSON line: messages sent, pings, reconnects, and the first sample as read back through the driver.
"""

import argparse
import csv
import json
import struct
import sys


class RecordedMPU6050Bus:
    """machine.I2C with an MPU-6050 at 0x68 whose registers hold one recorded row after another."""

    def __init__(self, rows):
        self.rows = rows
        self.index = 0
        self.awake = False

    def writeto_mem(self, address, register, data):
        assert address == 0x68, hex(address)
        if register == 0x6B:
            self.awake = data == b"\x00"

    def readfrom_mem(self, address, register, n):
        assert address == 0x68 and register == 0x3B and n == 14, (address, register, n)
        if not self.awake:
            raise OSError("MPU-6050 still asleep: PWR_MGMT_1 was not cleared")
        ax, ay, az, gx, gy, gz = self.rows[self.index % len(self.rows)]
        self.index += 1
        accel, gyro = 16384.0 / 9.80665, 131.0 * 180.0 / 3.141592653589793

        def raw(value, scale):
            return max(-32768, min(32767, round(value * scale)))

        return struct.pack(">7h", raw(ax, accel), raw(ay, accel), raw(az, accel), 3400,
                           raw(gx, gyro), raw(gy, gyro), raw(gz, gyro))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("node_dir")
    for name in ("port", "count", "batch", "keepalive"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--recording", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.node_dir)
    from mpu6050 import MPU6050
    from node import SensorNode
    from umqtt.robust import MQTTClient

    with open(args.recording) as handle:
        rows = [[float(value) for value in row[1:7]] for row in list(csv.reader(handle))[1:args.count + 1]]
    sensor = MPU6050(RecordedMPU6050Bus(rows))
    client = MQTTClient("esp32-imu-test", "127.0.0.1", port=args.port, keepalive=args.keepalive)
    client.DELAY = 0.2
    client.connect()
    node = SensorNode(client, args.topic, sensor.read, rate_hz=args.rate, batch=args.batch,
                      keepalive_s=args.keepalive, retry_ms=200)
    node.run(count=args.count)
    client.disconnect()
    first = MPU6050(RecordedMPU6050Bus(rows)).read()
    print(json.dumps({"sent": node.sent, "pings": node.pings, "reconnects": node.reconnects, "first": first,
                      "recorded": rows[0]}))


main()
