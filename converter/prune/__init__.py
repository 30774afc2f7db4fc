"""Structured pruning of ONNX graphs: whole channels and neurons out, the consumer layers refitted.

graph.py finds which channels must be removed together (channel groups); scoring.py ranks them from calibration
activations; statistics.py gathers the activations' second moments; refit.py solves for the consumer layers'
new weights; surgery.py writes the smaller graph; allocation.py chooses per-group ratios for `--prune auto`.
"""
