#!/bin/sh
# An emulated aarch64 device for tests/arm64 (run by `make test-arm64`), cached under .cache/arm64:
#   sysroot/   Debian 12 arm64 python3.11 and the libraries it and the device wheels load (apt-get download +
#              dpkg -x, no chroot, no binfmt), plus a Raspberry Pi 4 style proc/cpuinfo: qemu-user shows the guest
#              the host's x86 /proc/cpuinfo, on which onnxruntime 1.32 and ai-edge-litert 2.3 die with SIGSEGV;
#              `qemu-aarch64-static -L sysroot` serves any file that exists under sysroot instead.
#   site/      the device install's aarch64 wheels (pip install --target, every manylinux tag listed: pip
#              matches only the tags it is given)
#   app/       this tree's edge-runtime wheel, rebuilt at every run (--no-deps), so the tests run the code as it is
# Usage: scripts/arm64_sysroot.sh [CACHE_DIR] (default .cache/arm64); PYTHON is the host's venv python.
set -eu

CACHE=${1:-.cache/arm64}
PYTHON=${PYTHON:-.venv/bin/python}
SYSROOT=$CACHE/sysroot
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$CACHE"

# -- host tools ------------------------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static >/dev/null
fi

# -- the arm64 sysroot -------------------------------------------------------------------------------------------
# Debian 12's python3.11 and the shared libraries of its standard library, of numpy/onnxruntime/LiteRT
# (libstdc++, libgcc) and of cryptography (libssl).
PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0
 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2
 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libdb5.3 libgdbm6 libzstd1
 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libpython3.11 media-types tzdata"
if [ ! -f "$SYSROOT/.complete" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -qq
    elif ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
        $SUDO apt-get update -qq
    fi
    rm -rf "$CACHE/debs" "$SYSROOT"
    mkdir -p "$CACHE/debs" "$SYSROOT"
    specs=""
    for package in $PACKAGES; do
        case $package in media-types | tzdata) specs="$specs $package" ;; *) specs="$specs $package:arm64" ;; esac
    done
    # shellcheck disable=SC2086 # one word per package
    (cd "$CACHE/debs" && apt-get download -qq $specs)
    for deb in "$CACHE"/debs/*.deb; do
        dpkg -x "$deb" "$SYSROOT"
    done
    # Debian 12 is merged-/usr: the loader and libraries are looked up in /lib and /usr/lib alike.
    for dir in lib bin sbin; do
        if [ -d "$SYSROOT/$dir" ] && [ ! -L "$SYSROOT/$dir" ]; then
            cp -a "$SYSROOT/$dir/." "$SYSROOT/usr/$dir/"
            rm -rf "${SYSROOT:?}/$dir"
        fi
        ln -sfn "usr/$dir" "$SYSROOT/$dir"
    done
    touch "$SYSROOT/.complete"
fi

# A Raspberry Pi 4's /proc/cpuinfo (four Cortex-A72: implementer 0x41 = Arm, part 0xd08): what onnxruntime and
# LiteRT read at start. Written every run so a test that edits it cannot leave the cache broken.
mkdir -p "$SYSROOT/proc"
: >"$SYSROOT/proc/cpuinfo"
for cpu in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' \
        "$cpu" >>"$SYSROOT/proc/cpuinfo"
done
printf 'Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n' \
    >>"$SYSROOT/proc/cpuinfo"

# -- the device install's aarch64 wheels -----------------------------------------------------------------------
# What `pip install 'edge-runtime[onnx,tflite]'` pulls on a Pi: the dependencies are read from pyproject.toml
# through the built wheel, so the sysroot gets exactly what a board would.
rm -rf "$CACHE/dist"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$CACHE/dist" .
wheel=$(ls "$CACHE"/dist/edge_runtime-*.whl)
stamp=$(sha256sum pyproject.toml | cut -c1-16)
PLATFORMS="--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_26_aarch64
 --platform manylinux_2_24_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
 --platform linux_aarch64"
if [ ! -f "$CACHE/site/.stamp-$stamp" ]; then
    rm -rf "$CACHE/site"
    # shellcheck disable=SC2086 # one word per option
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$CACHE/site" $PLATFORMS \
        --implementation cp --python-version 3.11 --abi cp311 --only-binary=:all: "${wheel}[onnx,tflite]"
    rm -rf "$CACHE"/site/edge_runtime "$CACHE"/site/converter "$CACHE"/site/edge_fleet "$CACHE"/site/edge_runtime-*
    touch "$CACHE/site/.stamp-$stamp"
fi
rm -rf "$CACHE/app"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$CACHE/app" --no-deps "$wheel"

# -- proof that the guest starts ---------------------------------------------------------------------------------
qemu-aarch64-static -cpu cortex-a72 -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" -c \
    "import platform, sqlite3, ssl, ctypes; print('aarch64 sysroot ok:', platform.machine(), platform.python_version())"
