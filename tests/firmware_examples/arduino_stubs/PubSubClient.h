// Stub of the PubSubClient library's API (knolleary/pubsubclient 2.8); see Arduino.h.
#pragma once
#include <cstdint>

class Client;

class PubSubClient {
 public:
  explicit PubSubClient(Client &client);
  PubSubClient &setServer(const char *domain, uint16_t port);
  PubSubClient &setKeepAlive(uint16_t keepAlive);
  bool setBufferSize(uint16_t size);
  bool connect(const char *id);
  bool connected();
  bool publish(const char *topic, const uint8_t *payload, unsigned int plength, bool retained);
  bool loop();
  int state();
};
