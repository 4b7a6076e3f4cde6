#!/usr/bin/env bash
# Swap Pillow for Pillow-SIMD (the SSE4/AVX2-accelerated drop-in fork) in the current Python environment.
#
# Run it AFTER installing everything else: a later install of a package that depends on Pillow
# (matplotlib, for one) puts Pillow back over it. Pillow-SIMD installs into the same `PIL` package as
# Pillow, so Pillow is removed first, and it
# is built from source: this script installs its build prerequisites (a C compiler, Python
# headers, libjpeg, zlib, libpng, libtiff, freetype) with apt-get where it runs as root on
# Debian/Ubuntu. `gpupipe info` and `gpupipe bench` then report "Pillow-SIMD <version>".
#
#   bash scripts/install_pillow_simd.sh            # newest Pillow-SIMD
#   PILLOW_SIMD_VERSION=12.1.1.post0 bash scripts/install_pillow_simd.sh
#   PYTHON=.venv/bin/python bash scripts/install_pillow_simd.sh
set -euo pipefail
PY=${PYTHON:-python3}
VER=${PILLOW_SIMD_VERSION:-}
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends build-essential python3-dev \
    libjpeg-dev zlib1g-dev libpng-dev libtiff-dev libfreetype-dev >/dev/null
fi
# AVX2 where the CPU has it (every x86-64 server of the last decade), else SSE4.
flags="-msse4"
if grep -q avx2 /proc/cpuinfo 2>/dev/null; then flags="-mavx2"; fi
"$PY" -m pip uninstall -y -q pillow pillow-simd >/dev/null 2>&1 || true
CC="${CC:-cc} $flags" "$PY" -m pip install -q --no-cache-dir --no-binary pillow-simd "pillow-simd${VER:+==$VER}"
"$PY" -c 'import PIL, PIL.Image as I; v = I.__version__; assert ".post" in v, v; print("installed Pillow-SIMD", v)'
