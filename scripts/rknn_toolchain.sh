#!/bin/sh
# Builds the RKNN workstation toolchain (rknn-toolkit2 2.5.0, x86_64, CPython 3.11) in its own virtual environment:
# the toolkit pins numpy<=1.26.4, onnx<=1.18, protobuf<=4.25.4 and torch<=2.4, so it cannot share the converter's.
# torch is imported at start but its pin is not enforced at run time: the CPU torch 2.13.0 (on this machine's disk,
# pip takes it) goes in with --no-deps instead of the CUDA build pip would resolve. The converter runs the toolkit
# in this environment as a subprocess (converter/rknn_toolchain.py); nothing else imports it.
# Usage: scripts/rknn_toolchain.sh DIR [PYTHON3.11]
set -eu
DIR=$1
PY=${2:-python3.11}
case "$(uname -m)" in x86_64) ;; *) echo "rknn-toolkit2 2.5.0 has x86_64 wheels only (this is $(uname -m))" >&2; exit 1;; esac
rm -rf "$DIR"
"$PY" -m venv "$DIR"
PIP="$DIR/bin/pip --quiet --disable-pip-version-check"
$PIP install --upgrade pip
$PIP install --no-deps torch==2.13.0 rknn-toolkit2==2.5.0
# torch's own imports (its pins are not installed with --no-deps), then the toolkit's, at the versions it accepts
$PIP install typing_extensions sympy networkx jinja2 fsspec filelock \
  numpy==1.26.4 onnx==1.18.0 protobuf==4.25.4 onnxruntime scipy opencv-python-headless fast-histogram psutil \
  ruamel.yaml tqdm
"$DIR/bin/python" -c "from rknn.api import RKNN; RKNN(verbose=False).release()"
touch "$DIR/.installed"
