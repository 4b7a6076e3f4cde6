#!/usr/bin/env bash
# What a GPU session runs, from the repository root on the GPU machine, in STEPS that fit the
# 10-minute limit of one device call. Logs and results go to $OUT (default ./gpu-results); the
# last lines printed are the goal PASS/FAIL lines and one line per step saying whether it passed.
#
#   call 1:  STEPS=call1 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install versions tests kernel
#   call 2:  STEPS=call2 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install bench-gpu goals
#   call 3:  STEPS=call3 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install video
#   CPU smoke (no GPU; ~30 s on 2 cores): STEPS="bench-gpu goals" QUICK=1 OUT=/tmp/g bash scripts/gpu_session.sh
#
# Steps, in the order they run (any subset, space-separated; call1/call2 expand as above):
#   install    DALI + nvImageCodec from the offline bundle in $BUNDLE (skipped when they already
#              import), then the bundle's smoke check; fails when a smoke stage prints FAIL
#   versions   GPU, driver, CuPy/CUDA/DALI/nvImageCodec versions; `gpupipe info --json`
#   tests      pytest -m gpu                                       (timeout $TESTS_TIMEOUT, 300 s)
#   kernel     base64 kernel vs device copy over 256 MiB, then its goal (>= 70 %)
#   bench-gpu  gpupipe bench --backend gpu --goals: 4K JPEG/PNG transcode and resize-1080p, passthrough
#              with passthrough_device cpu and gpu, GPU path and CPU path on every core, frames/s and
#              CPU-s/frame (soft limit $BENCH_MAX_S, 300 s; hard timeout 450 s; QUICK=1: the small
#              matrix, for the CPU smoke)
#   goals      python -m gpupipe.tools.goals on bench-gpu's bench.json (+ the kernel step's JSON if
#              present): PASS/FAIL/SKIP/INFO lines
#   video      gpupipe bench --backend gpu --video: 1080p and 4K H.264 and HEVC clips (60 frames, made with
#              PyAV where there is no ffmpeg binary) as URIs straight from the clip (NVDEC on the GPU, PyAV
#              on the CPU; fitted to 1920x1080 and at the clip's size) against extracting them to PNG
#              first; then its goals (H100/H200: 4K H.264 >= 300 f/s, <= 5 CPU-ms/frame, >= 20x the
#              extraction's f/s; CPU path >= 5x fewer CPU-s/frame) into $OUT/video-goals.txt
#              (soft limit $VIDEO_MAX_S, 300 s; hard timeout 450 s; QUICK=1: 6 frames per clip)
#   budget     the byte budget on a GPU host: tests/test_stress.py, test_soak.py, test_warm_up.py and
#              test_holds.py here; scripts/gpu_memory.py (RSS after each start-up step and across
#              batches); serve_load (8 clients x 60, 512 MiB, JPEG fitted to 1920x1080) on the GPU
#              backend, on it with png_device: gpu, and on the CPU backend; the 4K soak on the GPU
#              backend (JPEG to 1920x1080, 4 and 16 threads, 512 MiB). ~5 min on an H200.
#   png        python -m gpupipe.tools.png_bench: 4K PNG (zlib level 1) transcode to JPEG with each PNG decoder in
#              one run: CPU path Pillow and libspng, GPU backend with DALI (num_threads = cores) and with nvCOMP +
#              the un-filter kernel; f/s and CPU-s/frame; PASS/FAIL against >= 2x the CPU path's f/s at <= 0.5x
#              its CPU-s/frame (needs nvidia-nvcomp-cu13 5.3 from the bundle or the index; ~2-3 min)
#   bench      the full `gpupipe bench --backend all` (not part of call1/call2: it may not fit a call)
#
# Exit status: 0 when every step run passed; 1 when a step failed (the summary names it);
# 3 when none failed but the goals were skipped (no usable GPU); 2 for an unknown step name.
set -uo pipefail
OUT=${OUT:-gpu-results}
STEPS=" ${STEPS:-call1 call2} "
STEPS=${STEPS// call1 / install versions tests kernel }
STEPS=${STEPS// call2 / install bench-gpu goals }
STEPS=${STEPS// call3 / install video }
for s in $STEPS; do
  case $s in install|versions|tests|kernel|bench-gpu|goals|video|bench|budget|png) ;;
    *) echo "gpu_session.sh: unknown step '$s' (steps: install versions tests kernel bench-gpu goals video bench budget png, call1, call2, call3)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd) PYTHONUNBUFFERED=1
want() { [[ "$STEPS" == *" $1 "* ]]; }
summary=()
failed=0
skipped=0
# record NAME RC [NOTE]: one summary line per step; RC 3 means skipped, 124 a timeout.
record() {
  local name=$1 rc=$2 note=${3:-}
  case $rc in
    0) summary+=("step $name: PASS${note:+ ($note)}") ;;
    3) summary+=("step $name: SKIPPED${note:+ ($note)}"); skipped=1 ;;
    124) summary+=("step $name: FAIL (timed out${note:+; $note})"); failed=1 ;;
    *) summary+=("step $name: FAIL (exit $rc${note:+; $note})"); failed=1 ;;
  esac
}
stack_imports() { python3 -c 'import nvidia.dali, nvidia.nvimgcodec' >/dev/null 2>&1; }

if want install; then
  if stack_imports; then
    echo "install: DALI and nvImageCodec already import" | tee "$OUT/install.log"
    record install 0 "already installed"
  elif [ -n "${BUNDLE:-}" ] && [ -f "$BUNDLE/install.sh" ]; then
    bash "$BUNDLE/install.sh" "$BUNDLE" 2>&1 | tee "$OUT/install.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
      python3 "$BUNDLE/smoke.py" 2>&1 | tee "$OUT/smoke.log"
      if grep -q '^FAIL' "$OUT/smoke.log"; then rc=1; fi
    fi
    record install "$rc" "log $OUT/install.log, $OUT/smoke.log"
  else
    echo "install: DALI/nvImageCodec do not import and \$BUNDLE has no install.sh" | tee "$OUT/install.log"
    record install 1 "no bundle"
  fi
fi
if want versions; then
  {
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import cupy, nvidia.dali as d; from nvidia import nvimgcodec as n; print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(), "dali", d.__version__, "nvimgcodec", getattr(n, "__version__", "?"))'
  } 2>&1 | tee "$OUT/versions.txt"
  rc=${PIPESTATUS[0]}
  python3 -m gpupipe info --json > "$OUT/info.json" 2>&1 || rc=1
  record versions "$rc" "$OUT/versions.txt"
fi
if want tests; then
  timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest -m gpu -v -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.log" | tail -30
  rc=${PIPESTATUS[0]}
  record tests "$rc" "log $OUT/pytest-gpu.log"
fi
if want kernel; then
  timeout 120 python3 -c 'import json, sys; from gpupipe.gpu.bench import base64_kernel_bandwidth as b; json.dump(b(256 << 20, 20), open(sys.argv[1], "w"), indent=1)' \
    "$OUT/base64-kernel.json" 2>&1 | tee "$OUT/kernel.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    python3 -m gpupipe.tools.goals --kernel "$OUT/base64-kernel.json" | tee "$OUT/kernel-goal.txt"
    rc=${PIPESTATUS[0]}
  fi
  record kernel "$rc" "$OUT/base64-kernel.json"
fi
if want bench-gpu; then
  timeout 450 python3 -m gpupipe bench --backend gpu --goals --max-seconds "${BENCH_MAX_S:-300}" ${QUICK:+--quick} \
    --out "$OUT/bench-gpu" 2>&1 | tee "$OUT/bench-gpu.log" | tail -20
  rc=${PIPESTATUS[0]}
  record bench-gpu "$rc" "$OUT/bench-gpu/BENCH.md"
fi
if want goals; then
  echo "== goals"
  kernel_args=()
  [ -f "$OUT/base64-kernel.json" ] && kernel_args=(--kernel "$OUT/base64-kernel.json")
  python3 -m gpupipe.tools.goals "$OUT/bench-gpu/bench.json" "${kernel_args[@]}" > "$OUT/goals.txt" 2>&1
  rc=$?
  cat "$OUT/goals.txt"
  record goals "$rc" "$OUT/goals.txt"
fi
if want video; then
  timeout 450 python3 -m gpupipe bench --backend gpu --video --max-seconds "${VIDEO_MAX_S:-300}" ${QUICK:+--quick} \
    --out "$OUT/bench-video" 2>&1 | tee "$OUT/bench-video.log" | tail -12
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    echo "== video goals"
    python3 -m gpupipe.tools.goals "$OUT/bench-video/bench.json" > "$OUT/video-goals.txt" 2>&1
    rc=$?
    cat "$OUT/video-goals.txt"
  fi
  record video "$rc" "$OUT/bench-video/BENCH.md, $OUT/video-goals.txt"
fi
if want png; then
  echo "== png: 4K PNG decoders (CPU Pillow/libspng, GPU DALI/nvCOMP)"
  timeout 300 python3 -m gpupipe.tools.png_bench --out "$OUT/png-bench.json" 2>&1 | tee "$OUT/png-bench.log" | tail -8
  rc=${PIPESTATUS[0]}
  grep -E '^(PASS|FAIL|SKIP) 4K PNG' "$OUT/png-bench.log" >> "$OUT/goals.txt" 2>/dev/null || true
  record png "$rc" "$OUT/png-bench.json"
fi
if want budget; then
  echo "== budget: memory tests on this host"
  timeout 300 python3 -m pytest -p no:cacheprovider -q -rs tests/test_stress.py tests/test_soak.py tests/test_warm_up.py tests/test_holds.py \
    2>&1 | tee "$OUT/budget-tests.log" | tail -8
  rc=${PIPESTATUS[0]}
  echo "== budget: host memory of the GPU path (scripts/gpu_memory.py)"
  timeout 240 python3 scripts/gpu_memory.py --json "$OUT/gpu-memory.json" 2>&1 | tee "$OUT/gpu-memory.md" | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  for variant in gpu gpu-png-device cpu; do
    case $variant in
      gpu) args=(--backend gpu) ;;
      gpu-png-device) args=(--backend gpu --set png_device=gpu) ;;
      cpu) args=(--backend cpu) ;;
    esac
    echo "== budget: serve_load $variant"
    timeout 300 python3 -m gpupipe.tools.serve_load --clients 8 --requests 60 --budget-mib 512 --format jpeg --size 1920x1080 \
      "${args[@]}" --out "$OUT/serve-load-$variant.json" > "$OUT/serve-load-$variant.log" 2>&1
    [ $? -le 1 ] || rc=1  # 1: a goal missed (reported below); more: it did not run
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print({k: d[k] for k in ("pipelines", "requests_per_s", "p50_ms", "p99_ms", "errors", "startup_s", "startup_rss_mib", "pinned_setting_mib", "peak_rss_mib", "peak_above_startup_mib", "goal_rss_mib", "rss_within_goal", "cache_peak_mib", "server_cpu_s")})' \
      "$OUT/serve-load-$variant.json" 2>&1 || tail -5 "$OUT/serve-load-$variant.log"
  done
  echo "== budget: 4K soak on the GPU backend"
  timeout 300 python3 scripts/soak.py --backend gpu --synthetic --resolution 4k --kind jpeg --output jpeg --size 1920x1080 \
    --distinct --requests 300 --threads 4 16 --budget-mib 512 2>&1 | tee "$OUT/soak-gpu.md" | tail -6
  [ "${PIPESTATUS[0]}" -le 1 ] || rc=1
  record budget "$rc" "$OUT/budget-tests.log, $OUT/gpu-memory.md, $OUT/serve-load-*.json, $OUT/soak-gpu.md"
fi
if want bench; then
  timeout 540 python3 -m gpupipe bench --backend all --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" | tail -30
  rc=${PIPESTATUS[0]}
  record bench "$rc" "$OUT/bench/BENCH.md"
fi

echo "== steps ($OUT)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then exit 1; fi
if [ "$skipped" -ne 0 ]; then exit 3; fi
exit 0
