"""A sensor node: read an IIO accelerometer/gyroscope (Linux sysfs) and publish sample batches over MQTT.

Runs on a small Linux board (a Pi Zero next to the machine it watches) with only paho-mqtt installed; the
edge-runtime daemon elsewhere subscribes to the topic. Messages are the daemon's batch format:
    {"ts": <time of the first sample>, "samples": [[ch0, ch1, ...], ...]}

    python iio_mqtt_publisher.py --broker 192.0.2.10 --topic sensors/pi-01/imu --device mpu6050 \\
        --channels in_accel_x_raw,in_accel_y_raw,in_accel_z_raw --rate 10 --batch 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt

IIO_ROOT = Path("/sys/bus/iio/devices")


def find_device(root: Path, name: str) -> Path:
    for folder in sorted(root.glob("iio:device*")):
        if folder.name == name or (folder / "name").read_text().strip() == name:
            return folder
    raise SystemExit(f"no IIO device {name!r} under {root}")


def channel_reader(device: Path, attribute: str):
    """(raw + offset) * scale, with the channel's own scale/offset files or the channel type's."""
    base = attribute.removesuffix("_raw")
    kind = "_".join(base.split("_")[:2])  # in_accel_x -> in_accel

    def number(*names: str, default: float) -> float:
        for name in names:
            path = device / name
            if path.exists():
                return float(path.read_text())
        return default

    scale = number(f"{base}_scale", f"{kind}_scale", default=1.0)
    offset = number(f"{base}_offset", f"{kind}_offset", default=0.0)
    path = device / attribute
    return lambda: (float(path.read_text()) + offset) * scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--channels", required=True, help="comma-separated sysfs attributes, in channel order")
    parser.add_argument("--rate", type=float, default=10.0, help="samples per second")
    parser.add_argument("--batch", type=int, default=10, help="samples per message")
    parser.add_argument("--root", type=Path, default=IIO_ROOT)
    parser.add_argument("--count", type=int, default=0, help="stop after this many samples (0: never)")
    args = parser.parse_args(argv)

    device = find_device(args.root, args.device)
    readers = [channel_reader(device, name) for name in args.channels.split(",")]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sensor-{args.device}-{args.topic}")
    client.reconnect_delay_set(1, 30)
    client.connect_async(args.broker, args.port)
    client.loop_start()
    period, batch, first_ts, sent = 1.0 / args.rate, [], 0.0, 0
    next_tick = time.monotonic()
    last = None
    while not args.count or sent < args.count:
        if not batch:
            first_ts = time.time()
        batch.append([read() for read in readers])
        sent += 1
        if len(batch) == args.batch or sent == args.count:
            last = client.publish(args.topic, json.dumps({"ts": first_ts, "samples": batch}), qos=1)
            batch = []
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    if last is not None:
        last.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
