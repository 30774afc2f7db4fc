"""The peer a user writes by hand: subscribe, cut windows, session.run, publish. No spool, no checks.

    python benchmarks/bare_mqtt_script.py BUNDLE PORT

Used by benchmarks/daemon.py to tell the latency of two MQTT hops in Python from what the daemon adds.
It gets the same TCP_NODELAY socket option as the daemon, so the comparison is about the daemon's own work.
"""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt

from edge_runtime.bundle import read_bundle


def main() -> None:
    bundle, port = read_bundle(sys.argv[1]), int(sys.argv[2])
    spec = bundle.manifest.card["input"]
    mean = np.asarray(spec["normalize"]["mean"], dtype=np.float32)
    std = np.asarray(spec["normalize"]["std"], dtype=np.float32)
    window, hop = spec["window"], spec["hop"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(bundle.model_bytes(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    buffer: list[list[float]] = []
    state = {"seq": 0, "since": 0}

    def on_message(client, userdata, message) -> None:
        body = json.loads(message.payload)
        for row in body["samples"]:
            buffer.append(row)
            state["since"] += 1
            if len(buffer) >= window and (len(buffer) == window or state["since"] >= hop):
                state["since"] = 0
                x = ((np.asarray(buffer[-window:], dtype=np.float32) - mean) / std).T[None]
                scores = session.run(None, {name: x})[0][0]
                state["seq"] += 1
                out = {"seq": state["seq"], "class": int(np.argmax(scores))}
                client.publish("edge/bench-01/predictions/bare", json.dumps(out), qos=1)
        del buffer[:-window]

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bare-script")
    client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: (c.subscribe("bench/imu", 0), c.publish(
        "edge/bench-01/status", json.dumps({"state": "online"}), qos=1))
    client.connect("127.0.0.1", port)
    client.loop_forever()


if __name__ == "__main__":
    main()
