"""Runs inside the emulated aarch64 guest (tests/arm64): load a bundle exactly as the daemon does (checksums,
golden output reproduced on this board's backend), run the given inputs, write the outputs.

    python3.11 guest_predict.py BUNDLE INPUTS.npz OUTPUTS.npz BOARD
Prints one JSON line: machine, backend, golden error, seconds (meaningless under emulation).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.board import load_board
from edge_runtime.model_loader import load_bundle_model


def main() -> None:
    bundle, inputs, outputs, board = sys.argv[1:5]
    model = load_bundle_model(Path(bundle), name=None, backends=None, board=load_board(board), trusted_keys=None,
                              require_signature=False)
    x = np.load(inputs)["x"]
    started = time.perf_counter()
    rows = [model.run({model.input_name: x[i:i + 32]})[model.output_name] for i in range(0, len(x), 32)]
    seconds = time.perf_counter() - started
    np.savez(outputs, y=np.concatenate(rows))
    print(json.dumps({"machine": platform.machine(), "backend": model.choice.active,
                      "degraded": model.choice.degraded, "golden_max_error": model.golden_max_error,
                      "rows": len(x), "seconds": round(seconds, 3)}))
    model.close()


if __name__ == "__main__":
    main()
