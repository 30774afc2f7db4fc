// Stub of the Arduino core's API the sketches use, with the signatures of arduino-esp32: enough for the host
// g++ to check a sketch's syntax and types (tests/firmware_examples/test_arduino_sketch.py). Not a toolchain.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <sys/time.h>

void delay(uint32_t ms);
unsigned long millis();
void configTime(long gmtOffset_sec, int daylightOffset_sec, const char *server1, const char *server2 = nullptr,
                const char *server3 = nullptr);

class HardwareSerial {
 public:
  void begin(unsigned long baud);
  size_t println(const char *text);
  size_t print(const char *text);
};
extern HardwareSerial Serial;
