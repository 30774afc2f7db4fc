"""Inference backends, one module each, so a board without a backend's native library still loads the rest."""
