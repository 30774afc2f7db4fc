"""Edit before copying to the board (mpremote cp config.py :)."""

WIFI_SSID = "site-sensors"
WIFI_PASSWORD = "change-me"
BROKER = "192.0.2.10"  # the machine running mosquitto and, next to it or elsewhere, the edge-runtime daemon
PORT = 1883
CLIENT_ID = "esp32-imu-01"
TOPIC = "sensors/pi-01/imu"  # the daemon's `source: {type: mqtt, topic: ...}`
RATE_HZ = 10  # the model card's rate_hz
BATCH = 10  # samples per message
KEEPALIVE_S = 30
I2C_SCL = 22
I2C_SDA = 21
