// Stub of arduino-esp32's Wire (TwoWire) API; see Arduino.h.
#pragma once
#include <cstdint>

class TwoWire {
 public:
  bool begin(int sda, int scl, uint32_t frequency = 0);
  void beginTransmission(uint16_t address);
  uint8_t endTransmission(bool sendStop = true);
  uint8_t requestFrom(uint16_t address, uint8_t size, bool sendStop = true);
  size_t write(uint8_t value);
  int read();
  int available();
};
extern TwoWire Wire;
