// ESP32 + MPU-6050 sensor node (Arduino core for ESP32, PubSubClient library): the same node as
// ../../esp32-micropython/, in C++. Reads the MPU-6050 on I2C (address 0x68; PWR_MGMT_1 = 0 wakes it; 14 bytes
// from ACCEL_XOUT_H = 0x3B as big-endian int16), publishes batches in the daemon's format
//   {"ts": <unix time of the first sample>, "samples": [[ax, ay, az, gx, gy, gz], ...]}
// at the model card's rate, keeps the MQTT session alive between batches (PubSubClient pings from loop()) and
// reconnects with a back-off when Wi-Fi or the broker goes away, sending the pending batch again.
// Wiring: VCC 3V3, GND, SCL GPIO 22, SDA GPIO 21, AD0 to GND.
// No Arduino/ESP32 toolchain is reachable from this repository's tests: tests/firmware_examples/
// test_arduino_sketch.py checks the syntax with the host g++ against small stub headers only.

#include <Arduino.h>
#include <PubSubClient.h>
#include <WiFi.h>
#include <Wire.h>
#include <time.h>

// -- edit before flashing ----------------------------------------------------------------------------------
static const char *WIFI_SSID = "site-sensors";
static const char *WIFI_PASSWORD = "change-me";
static const char *BROKER = "192.0.2.10";
static const uint16_t PORT = 1883;
static const char *CLIENT_ID = "esp32-imu-01";
static const char *TOPIC = "sensors/pi-01/imu";  // the daemon's source: {type: mqtt, topic: ...}
static const uint32_t RATE_HZ = 10;              // the model card's rate_hz
static const size_t BATCH = 10;                  // samples per message
static const uint16_t KEEPALIVE_S = 30;

// -- MPU-6050 ---------------------------------------------------------------------------------------------
static const uint8_t MPU_ADDRESS = 0x68;
static const uint8_t PWR_MGMT_1 = 0x6B;
static const uint8_t ACCEL_XOUT_H = 0x3B;
static const float ACCEL_SCALE = 9.80665f / 16384.0f;                  // +-2 g: m/s2 per LSB
static const float GYRO_SCALE = (3.14159265f / 180.0f) / 131.0f;       // +-250 deg/s: rad/s per LSB

static bool mpuWrite(uint8_t reg, uint8_t value) {
  Wire.beginTransmission(MPU_ADDRESS);
  Wire.write(reg);
  Wire.write(value);
  return Wire.endTransmission() == 0;
}

// One sample: ax, ay, az (m/s2), gx, gy, gz (rad/s), in the card's channel order. False if the bus failed.
static bool mpuRead(float out[6]) {
  Wire.beginTransmission(MPU_ADDRESS);
  Wire.write(ACCEL_XOUT_H);
  if (Wire.endTransmission(false) != 0) return false;
  if (Wire.requestFrom(MPU_ADDRESS, (uint8_t)14) != 14) return false;
  int16_t raw[7];
  for (int i = 0; i < 7; i++) {
    uint8_t high = Wire.read();
    uint8_t low = Wire.read();
    raw[i] = (int16_t)((high << 8) | low);  // big-endian
  }
  for (int i = 0; i < 3; i++) out[i] = raw[i] * ACCEL_SCALE;          // raw[3] is the temperature
  for (int i = 0; i < 3; i++) out[3 + i] = raw[4 + i] * GYRO_SCALE;
  return true;
}

// -- MQTT ----------------------------------------------------------------------------------------------------
static WiFiClient wifi;
static PubSubClient mqtt(wifi);
static char message[BATCH * 6 * 12 + 64];
static float samples[BATCH][6];
static size_t count = 0;
static double firstTs = 0;
static uint32_t retryMs = 500;

static double unixTime() {
  struct timeval now;
  gettimeofday(&now, nullptr);
  return now.tv_sec + now.tv_usec / 1e6;
}

static void ensureConnected() {
  while (!mqtt.connected()) {
    if (WiFi.status() != WL_CONNECTED) {
      WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
      for (int i = 0; i < 50 && WiFi.status() != WL_CONNECTED; i++) delay(200);
    }
    if (WiFi.status() == WL_CONNECTED && mqtt.connect(CLIENT_ID)) {
      retryMs = 500;
      return;
    }
    delay(retryMs);
    retryMs = retryMs < 30000 ? retryMs * 2 : 30000;  // back off, up to 30 s
  }
}

static size_t formatBatch() {
  size_t n = snprintf(message, sizeof(message), "{\"ts\": %.3f, \"samples\": [", firstTs);
  for (size_t s = 0; s < count; s++) {
    n += snprintf(message + n, sizeof(message) - n, "%s[%.5f, %.5f, %.5f, %.5f, %.5f, %.5f]", s ? ", " : "",
                  samples[s][0], samples[s][1], samples[s][2], samples[s][3], samples[s][4], samples[s][5]);
  }
  n += snprintf(message + n, sizeof(message) - n, "]}");
  return n;
}

static void sendBatch() {
  size_t length = formatBatch();
  while (!mqtt.publish(TOPIC, (const uint8_t *)message, length, false)) {
    ensureConnected();  // the same batch again once the session is back
  }
  count = 0;
}

void setup() {
  Serial.begin(115200);
  Wire.begin(21, 22, 400000);
  while (!mpuWrite(PWR_MGMT_1, 0x00)) {  // wake up: the chip starts in sleep mode
    Serial.println("MPU-6050 not answering at 0x68");
    delay(1000);
  }
  WiFi.mode(WIFI_STA);
  mqtt.setServer(BROKER, PORT);
  mqtt.setKeepAlive(KEEPALIVE_S);
  mqtt.setBufferSize(sizeof(message) + 64);
  ensureConnected();
  configTime(0, 0, "pool.ntp.org");  // sample timestamps are wall-clock time
}

void loop() {
  static uint32_t next = millis();
  ensureConnected();
  mqtt.loop();  // answers the broker and sends PINGREQ within the keepalive
  if ((int32_t)(millis() - next) < 0) return;
  next += 1000 / RATE_HZ;
  float sample[6];
  if (!mpuRead(sample)) return;
  if (count == 0) firstTs = unixTime();
  memcpy(samples[count++], sample, sizeof(sample));
  if (count == BATCH) sendBatch();
}
