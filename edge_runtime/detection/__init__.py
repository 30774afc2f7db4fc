"""Object detection on the device: decoders per output format (yolo, ssd, postprocessed), NMS, and the geometry
that maps boxes from the model's input back onto the source frame. Imports only the card and numpy."""

from edge_runtime.detection.decoder import DetectionDecoder, Detections
from edge_runtime.detection.geometry import ImageTransform, identity, letterbox, stretch

__all__ = ["DetectionDecoder", "Detections", "ImageTransform", "identity", "letterbox", "stretch"]
