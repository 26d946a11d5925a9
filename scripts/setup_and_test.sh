#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite (what CI runs via .ci/run).
#  - Debian packages: the Fashion-MNIST dataset, g++ (HLS C-simulation; its gcc builds the
#    native engine), Chromium + driver (browser test), lm-sensors, tcl + make (the overlay
#    build scripts run with stub Vivado commands), aarch64 and armhf cross gccs and qemu-user
#    (the native engine's board builds, checked under emulation), iverilog + yosys (the RTL twin,
#    hls/rtl/); installed only when missing, only where apt-get runs as root, without
#    "recommended" extras (--no-install-recommends) and without upgrading a package that is
#    already installed (--no-upgrade), apt's own progress shown.
#  - PyTorch's CPU wheel first (a plain 'torch' requirement would pull a multi-GB CUDA build),
#    then this package with its [test] extra, into the Python that runs it ($PYTHON, else
#    python3: the README's venv when it is active, as in .ci/run).
#  - Then ruff and the whole pytest suite, with the 15 slowest tests listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== setup_and_test: $* ($(date -u +%H:%M:%S))"; }

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v g++ >/dev/null || need_apt+=(g++)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v sensors >/dev/null || need_apt+=(lm-sensors)
command -v tclsh >/dev/null || need_apt+=(tcl)
command -v make >/dev/null || need_apt+=(make)
# the native kernel's board builds, cross-compiled and run under qemu-user in tests: aarch64
# (ZU+ boards' Cortex-A53) and 32-bit armhf (the PYNQ-Z2's Cortex-A9, NEON and plain C)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need_apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
{ command -v qemu-aarch64 && command -v qemu-arm; } >/dev/null || need_apt+=(qemu-user)
command -v iverilog >/dev/null || need_apt+=(iverilog)  # RTL twin simulation (hls/rtl/)
command -v yosys >/dev/null || need_apt+=(yosys)        # RTL twin synthesis report check
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "Debian packages missing: ${need_apt[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --no-upgrade \
      "${need_apt[@]}"
  else
    echo "warning: missing Debian packages ${need_apt[*]} (tests that need them will fail)" >&2
  fi
fi

PY=${PYTHON:-python3}
step "Python packages into $("$PY" -c 'import sys; print(sys.prefix)')"
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
# pynq for the fpga backend's tests on the simulated ZCU102 (tests/test_fpga_sim.py):
# installed only when missing, so a board image's own pynq is never replaced
"$PY" -c "import pynq" 2>/dev/null || "$PY" -m pip install -q "pynq==3.0.1" "pycparser<3"
"$PY" -m pip install -q -e ".[test]"

step "ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
step "pytest"
"$PY" -m pytest -q -ra --durations=15
step "done"
