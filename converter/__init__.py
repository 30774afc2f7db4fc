"""edge-convert: turn a trained model into a verified, optimised bundle for a named board."""
