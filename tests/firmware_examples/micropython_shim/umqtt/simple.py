"""CPython stand-in for MicroPython's umqtt.simple (micropython-lib): the same class and methods, MQTT 3.1.1 over a
plain socket, so the ESP32 node's code runs unchanged against the real broker in the tests. Like the original it
raises OSError when the connection is gone and never reconnects by itself."""

import socket
import struct


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=False, ssl_params=None):
        self.client_id = client_id if isinstance(client_id, bytes) else client_id.encode()
        self.server = server
        self.port = port or 1883
        self.keepalive = keepalive
        self.sock = None
        self.pid = 0

    @staticmethod
    def _length(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @staticmethod
    def _string(value):
        return struct.pack("!H", len(value)) + value

    def _recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise OSError("connection closed by the broker")
            data += chunk
        return data

    def connect(self, clean_session=True):
        self.sock = socket.create_connection((self.server, self.port), timeout=10)
        variable = self._string(b"MQTT") + bytes([4, 0x02 if clean_session else 0]) + struct.pack("!H", self.keepalive)
        body = variable + self._string(self.client_id)
        self.sock.sendall(b"\x10" + self._length(len(body)) + body)
        reply = self._recv(4)
        if reply[0] != 0x20 or reply[3] != 0:
            raise MQTTException(reply[3])
        return reply[2] & 1

    def disconnect(self):
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()

    def ping(self):
        self.sock.sendall(b"\xc0\x00")
        if self._recv(2) != b"\xd0\x00":
            raise OSError("no PINGRESP")

    def publish(self, topic, msg, retain=False, qos=0):
        header = 0x30 | (qos << 1) | int(retain)
        body = self._string(topic)
        if qos:
            self.pid = self.pid % 65535 + 1
            body += struct.pack("!H", self.pid)
        body += msg
        self.sock.sendall(bytes([header]) + self._length(len(body)) + body)
        if qos == 1:
            reply = self._recv(4)
            if reply[0] != 0x40 or struct.unpack("!H", reply[2:])[0] != self.pid:
                raise OSError(f"unexpected reply {reply!r} to a QoS 1 publish")
