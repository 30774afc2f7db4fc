// Stub of arduino-esp32's WiFi API; see Arduino.h.
#pragma once
#include <cstdint>

typedef enum { WL_IDLE_STATUS = 0, WL_NO_SSID_AVAIL = 1, WL_CONNECTED = 3, WL_CONNECT_FAILED = 4,
               WL_DISCONNECTED = 6 } wl_status_t;
typedef enum { WIFI_OFF = 0, WIFI_STA = 1, WIFI_AP = 2, WIFI_AP_STA = 3 } wifi_mode_t;

class Client {
 public:
  virtual ~Client() = default;
};

class WiFiClient : public Client {};

class WiFiClass {
 public:
  wl_status_t begin(const char *ssid, const char *passphrase = nullptr);
  wl_status_t status();
  bool mode(wifi_mode_t mode);
};
extern WiFiClass WiFi;
