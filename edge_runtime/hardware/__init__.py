"""What the machine the daemon runs on says about itself: which board it is (device tree, L4T release, accelerator
device nodes and USB ids), whether its /proc/cpuinfo lets the ARM runtimes start, its temperature and throttling.

Every reader takes a root directory ("/" on a device), so tests feed recorded device trees and sysfs files of each
board. Nothing here imports a backend: this is read before onnxruntime or LiteRT are loaded, because on an ARM
system with an unusable /proc/cpuinfo loading them kills the process.
"""

from __future__ import annotations

import os
from pathlib import Path

#: where /proc, /sys, /etc and /dev are read from: "/" on a device; a container given the host's under /host sets
#: EDGE_HARDWARE_ROOT=/host (tests point it at recorded trees)
ROOT_VARIABLE = "EDGE_HARDWARE_ROOT"


def hardware_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE) or "/")
