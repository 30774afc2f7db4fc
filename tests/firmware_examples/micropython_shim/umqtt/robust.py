"""CPython stand-in for umqtt.robust: umqtt.simple whose publish reconnects and retries when the socket fails."""

import time

from umqtt import simple


class MQTTClient(simple.MQTTClient):
    DELAY = 2
    DEBUG = False

    def delay(self, i):
        time.sleep(self.DELAY)

    def reconnect(self):
        i = 0
        while 1:
            try:
                return super().connect(False)
            except OSError:
                i += 1
                self.delay(i)

    def publish(self, topic, msg, retain=False, qos=0):
        while 1:
            try:
                return super().publish(topic, msg, retain, qos)
            except OSError:
                self.reconnect()
