#!/usr/bin/env bash
# edge-runtime on a Jetson Orin with JetPack 6 (L4T R36): onnxruntime's GPU build for Jetson (TensorRT and CUDA
# providers; the package index has only CPU builds for aarch64), the daemon in /opt/edge-runtime, its own user,
# the TensorRT engine cache, and the systemd unit. Run as root on the Jetson:
#     sudo ./setup-jetpack6.sh [CONFIG.yaml]
# ORT_INDEX is the pip index with NVIDIA's JetPack 6 wheels (the Jetson AI Lab index; its address has moved before:
# check https://docs.nvidia.com/deeplearning/frameworks/install-pytorch-jetson-platform or the Jetson AI Lab page
# if pip finds nothing), or set ORT_WHEEL to a downloaded onnxruntime_gpu-*.whl.
# Checked by tests/firmware_examples/test_jetson_setup.py with shellcheck.
set -euo pipefail

ORT_INDEX=${ORT_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}
ORT_WHEEL=${ORT_WHEEL:-}
PREFIX=/opt/edge-runtime
SERVICE_USER=edge-runtime
ENGINE_CACHE=/var/cache/edge-runtime/tensorrt   # device_configs/jetson-orin.yaml: trt_engine_cache_path
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIG=${1:-}

die() {
    echo "setup-jetpack6: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
[ -r /etc/nv_tegra_release ] || die "no /etc/nv_tegra_release: this is not a Jetson running L4T"
release=$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' /etc/nv_tegra_release)
[ "$release" = 36 ] || die "L4T R${release:-?} found; this script is for JetPack 6 (R36). A Jetson Nano (R32, \
JetPack 4) cannot run the GPU build: see device_configs/jetson-nano.yaml"

echo "== packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null

echo "== user ${SERVICE_USER} (groups video and render reach the GPU, dialout serial sensors)"
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/edge-runtime --no-create-home --shell /usr/sbin/nologin \
        --groups video,render,dialout "$SERVICE_USER"
fi

echo "== onnxruntime-gpu for JetPack 6 and edge-runtime in ${PREFIX}"
python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
if [ -n "$ORT_WHEEL" ]; then
    "$PREFIX/bin/pip" install --quiet "$ORT_WHEEL"
else
    "$PREFIX/bin/pip" install --quiet --index-url "$ORT_INDEX" onnxruntime-gpu
fi
# edge-runtime without the [onnx] extra: that would pull the CPU-only onnxruntime over the GPU build.
"$PREFIX/bin/pip" install --quiet edge-runtime
"$PREFIX/bin/python" - <<'PY'
import onnxruntime
providers = onnxruntime.get_available_providers()
print("onnxruntime", onnxruntime.__version__, providers)
missing = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} - set(providers)
if missing:
    raise SystemExit(f"this onnxruntime build lacks {', '.join(sorted(missing))}: it is not the JetPack 6 GPU build")
PY

echo "== TensorRT engine cache ${ENGINE_CACHE} (the first start builds the engine: minutes; later starts reuse it)"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 /var/cache/edge-runtime "$ENGINE_CACHE" \
    /var/cache/edge-runtime/cuda /var/lib/edge-runtime
install -d -m 0755 /etc/edge-runtime /etc/edge-runtime/keys
if [ -n "$CONFIG" ]; then
    install -m 0644 "$CONFIG" /etc/edge-runtime/config.yaml
fi

echo "== systemd unit"
install -m 0644 "$HERE/edge-runtime-jetson.service" /etc/systemd/system/edge-runtime.service
systemctl daemon-reload
if [ -f /etc/edge-runtime/config.yaml ]; then
    "$PREFIX/bin/edge-runtime" check /etc/edge-runtime/config.yaml
    systemctl enable --now edge-runtime.service
    echo "edge-runtime is running: journalctl -u edge-runtime -f"
else
    echo "write /etc/edge-runtime/config.yaml (board: jetson-orin, or leave it out: it is detected), then:"
    echo "  sudo systemctl enable --now edge-runtime"
fi
