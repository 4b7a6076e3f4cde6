#!/usr/bin/env bash
# Everything a GPU session should run, from the repository root on the GPU machine: install the
# offline DALI/nvImageCodec bundle (if its parts were copied to $BUNDLE), check the stack, run the
# GPU tests, the base64 kernel bandwidth and the benchmark, and leave the logs and results in $OUT
# (default ./gpu-results). Then copy the figures into docs/gpu.md's runs table.
#
#   BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh                 # every step
#   STEPS="tests kernel" OUT=$OUT bash scripts/gpu_session.sh          # some steps (a device call
#                                                                      # is limited to 10 minutes)
# Steps, in order: install (bundle + smoke check), versions, tests, kernel, bench.
set -uo pipefail
OUT=${OUT:-gpu-results}
STEPS=" ${STEPS:-install versions tests kernel bench} "
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd) PYTHONUNBUFFERED=1
want() { [[ "$STEPS" == *" $1 "* ]]; }
rc=0

if want install && [ -n "${BUNDLE:-}" ] && [ -f "$BUNDLE/install.sh" ]; then
  bash "$BUNDLE/install.sh" "$BUNDLE" || exit 1
  python3 "$BUNDLE/smoke.py" 2>&1 | tee "$OUT/smoke.log"
fi
if want versions; then
  {
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import cupy, nvidia.dali as d; from nvidia import nvimgcodec as n; print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(), "dali", d.__version__, "nvimgcodec", getattr(n, "__version__", "?"))'
  } 2>&1 | tee "$OUT/versions.txt"
  python3 -m gpupipe info --json > "$OUT/info.json" 2>&1
fi
if want tests; then
  python3 -m pytest -m gpu -v -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.log" | tail -30
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
if want kernel; then
  python3 -c 'import json; from gpupipe.gpu.bench import base64_kernel_bandwidth as b; print(json.dumps(b(256 << 20, 20), indent=1))' 2>&1 | tee "$OUT/base64-kernel.json"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
if want bench; then
  python3 -m gpupipe bench --backend all --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" | tail -30
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
exit $rc
