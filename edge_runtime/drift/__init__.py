"""Drift detection on the device: is the world still the one the model was trained for?"""

from edge_runtime.drift.monitor import DriftMonitor, Thresholds
from edge_runtime.drift.reference import DriftReference, build_reference

__all__ = ["DriftMonitor", "DriftReference", "Thresholds", "build_reference"]
