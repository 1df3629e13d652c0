#!/usr/bin/env bash
# The CUDA paths no CPU test reaches (benchmarks/gpu_check.py), in about 3 minutes on one GPU; one summary at the end.
#
#   bash benchmarks/gpu_check.sh [--out FILE] [gpu_check.py options]
#
# Runs from a source checkout with the machine's own python3 and torch (no install): PYTHONPATH=src. Wheels of missing
# packages (PyAV for the media check, say) can be carried in .whl/ and are installed to a temporary folder first:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/xkd-gpu-check-site .whl/*.whl
  export PYTHONPATH="/tmp/xkd-gpu-check-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
exec timeout 300 python3 benchmarks/gpu_check.py "$@"
