"""edge-runtime: run converted model bundles on edge boards and publish over MQTT."""

__version__ = "0.1.0"
