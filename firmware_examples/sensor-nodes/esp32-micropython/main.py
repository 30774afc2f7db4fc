"""ESP32 + MPU-6050 sensor node (MicroPython): Wi-Fi, clock from NTP, I2C, then SensorNode forever.

Wiring: MPU-6050 VCC to 3V3, GND to GND, SCL to GPIO 22, SDA to GPIO 21 (AD0 to GND: address 0x68).
Install: `mpremote mip install umqtt.robust`, then `mpremote cp config.py mpu6050.py node.py main.py :`
(or the .mpy files `mpy-cross -march=xtensawin` makes, for less RAM at import).
"""

import time

import config
import network
import ntptime
from machine import I2C, Pin, reset
from mpu6050 import MPU6050
from node import SensorNode
from umqtt.robust import MQTTClient


def connect_wifi():
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(config.WIFI_SSID, config.WIFI_PASSWORD)
        for _ in range(100):
            if wlan.isconnected():
                break
            time.sleep_ms(200)
        else:
            reset()  # start over rather than publish from a node that never got a network
    return wlan


def main():
    connect_wifi()
    ntptime.settime()  # sample timestamps are wall-clock time
    sensor = MPU6050(I2C(0, scl=Pin(config.I2C_SCL), sda=Pin(config.I2C_SDA), freq=400000))
    client = MQTTClient(config.CLIENT_ID, config.BROKER, port=config.PORT, keepalive=config.KEEPALIVE_S)
    client.connect()
    SensorNode(client, config.TOPIC, sensor.read, rate_hz=config.RATE_HZ, batch=config.BATCH,
               keepalive_s=config.KEEPALIVE_S).run()


main()
