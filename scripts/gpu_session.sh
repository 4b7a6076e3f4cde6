#!/usr/bin/env bash
# What a GPU session runs, from the repository root on the GPU machine, in STEPS that fit the
# 10-minute limit of one device call. Logs and results go to $OUT (default ./gpu-results); the
# last lines printed are the goal PASS/FAIL lines and one line per step saying whether it passed.
#
#   call 1:  STEPS=call1 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install versions tests kernel
#   call 2:  STEPS=call2 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install bench-gpu goals
#   call 3:  STEPS=call3 BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   # install video
#   ONE call (issue 18): STEPS=all BUNDLE=/tmp/b OUT=$OUT bash scripts/gpu_session.sh   (= call-all)
#
# STEPS=all runs install versions tests kernel bench-gpu goals hwdec png video budget, then the issue-18
# goal summary, within 8 minutes (ALL_DEADLINE_S, 470 s from the script's start). The plan, per step
# (soft: the step's own time limit, where it has one; hard: its `timeout`; both shrink to what is
# left before the deadline, and a step that cannot get MIN_STEP_S (20 s) is SKIPPED "no time left"):
#   step       soft  hard   what is cut for the one call
#   install      -    60    nothing (the bundle's wheels are local; ~20 s on the 2026-12-04 H200)
#   versions     -    20    nothing
#   tests        -    60    nothing (26 GPU tests took 24 s)
#   kernel       -    30    64 MiB instead of 256 MiB, 10 repeats
#   bench-gpu   100   140   --max-seconds 100 (the 2026-12-04 run: every goal row in 144 s at 120)
#   goals        -    10    nothing
#   hwdec        -    60    16 frames per batch, 2 repeats
#   png          -    45    --frames 4 --rounds 1
#   video        45    70   --quick (6 frames per clip)
#   budget       -    75    serve_load on the GPU and CPU backends only (8 clients x 30)
#   summary      -    10    python -m gpupipe.tools.session_goals: PASS/FAIL/NOT RUN per goal of issue 18,
#                           then the issue 15/17 GPU goal lines
#   total:     ~470 s at most; the bundle's parts are sent in their own calls before this one.
#   CPU smoke (no GPU; ~30 s on 2 cores): STEPS="bench-gpu goals" QUICK=1 OUT=/tmp/g bash scripts/gpu_session.sh
#
# Steps, in the order they run (any subset, space-separated; call1/call2 expand as above):
#   install    DALI + nvImageCodec from the offline bundle in $BUNDLE (skipped when they already
#              import), then the bundle's smoke check; fails when a smoke stage prints FAIL
#   versions   GPU, driver, CuPy/CUDA/DALI/nvImageCodec versions; `gpupipe info --json`
#   tests      pytest -m gpu                                       (timeout $TESTS_TIMEOUT, 300 s)
#   kernel     base64 kernel vs device copy over 256 MiB, then its goal (>= 70 %); where `ncu` is
#              installed ($NCU, PATH, /usr/local/cuda/bin), `ncu --set full` on one launch into
#              $OUT/ncu-b64.ncu-rep and its summary (memory/DRAM throughput %, top stall reason)
#              into $OUT/ncu-b64-summary.txt (step kernel-ncu)
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
#   hwdec      python -m gpupipe.tools.hwdec: 4K and 1080p JPEG transcode at DALI hw_decoder_load 0, 0.65, 1
#              (and the preallocation hints); prints the table and the chosen setting ($OUT/hwdec.json)
#   png        python -m gpupipe.tools.png_bench: 4K PNG (zlib level 1) transcode to JPEG with each PNG decoder in
#              one run: CPU path Pillow and libspng, GPU backend with DALI (num_threads = cores) and with nvCOMP +
#              the un-filter kernel; f/s and CPU-s/frame; PASS/FAIL against >= 2x the CPU path's f/s at <= 0.5x
#              its CPU-s/frame (needs nvidia-nvcomp-cu13 5.3 from the bundle or the index; ~2-3 min); its goal
#              line into $OUT/png-goals.txt
#   bench      the full `gpupipe bench --backend all` (not part of call1/call2: it may not fit a call)
#   summary    python -m gpupipe.tools.session_goals $OUT: one line per goal of issue 18 and the 15/17 rows
#
# Exit status: 0 when every step run passed; 1 when a step failed (the summary names it);
# 3 when none failed but the goals were skipped (no usable GPU); 2 for an unknown step name.
set -uo pipefail
OUT=${OUT:-gpu-results}
STEPS=" ${STEPS:-call1 call2} "
STEPS=${STEPS// call1 / install versions tests kernel }
STEPS=${STEPS// call2 / install bench-gpu goals }
STEPS=${STEPS// call3 / install video }
ALL=0
if [[ "$STEPS" == *" all "* || "$STEPS" == *" call-all "* ]]; then
  ALL=1
  STEPS=" install versions tests kernel bench-gpu goals hwdec png video budget summary "
fi
for s in $STEPS; do
  case $s in install|versions|tests|kernel|bench-gpu|goals|hwdec|png|video|bench|budget|summary) ;;
    *) echo "gpu_session.sh: unknown step '$s' (steps: install versions tests kernel bench-gpu goals hwdec png video bench budget summary, call1, call2, call3, all)" >&2; exit 2 ;;
  esac
done
START_S=$SECONDS
DEADLINE_S=${ALL_DEADLINE_S:-470}
MIN_STEP_S=${MIN_STEP_S:-20}
# plan NORMAL ALL: a step's hard limit in seconds, the ALL figure under STEPS=all, capped by the deadline there.
plan() {
  if [ "$ALL" -eq 0 ]; then echo "$1"; return; fi
  local left=$((DEADLINE_S - (SECONDS - START_S)))
  if [ "$2" -lt "$left" ]; then echo "$2"; else echo "$left"; fi
}
# has_time NAME HARD: under STEPS=all, whether NAME can still get MIN_STEP_S (or its whole HARD, if less)
# before the deadline; else it is recorded SKIPPED.
has_time() {
  [ "$ALL" -eq 1 ] || return 0
  local left=$((DEADLINE_S - (SECONDS - START_S))) need=$MIN_STEP_S
  [ "$2" -lt "$need" ] && need=$2
  if [ "$left" -lt "$need" ]; then record "$1" 3 "no time left in the one call"; return 1; fi
  return 0
}
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

if want install && has_time install 60; then
  if stack_imports; then
    echo "install: DALI and nvImageCodec already import" | tee "$OUT/install.log"
    record install 0 "already installed"
  elif [ -n "${BUNDLE:-}" ] && [ -f "$BUNDLE/install.sh" ]; then
    timeout "$(plan 600 60)" bash "$BUNDLE/install.sh" "$BUNDLE" 2>&1 | tee "$OUT/install.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
      timeout "$(plan 300 30)" python3 "$BUNDLE/smoke.py" 2>&1 | tee "$OUT/smoke.log"
      if grep -q '^FAIL' "$OUT/smoke.log"; then rc=1; fi
    fi
    record install "$rc" "log $OUT/install.log, $OUT/smoke.log"
  else
    echo "install: DALI/nvImageCodec do not import and \$BUNDLE has no install.sh" | tee "$OUT/install.log"
    record install 1 "no bundle"
  fi
fi
if want versions && has_time versions 20; then
  {
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import cupy, nvidia.dali as d; from nvidia import nvimgcodec as n; print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(), "dali", d.__version__, "nvimgcodec", getattr(n, "__version__", "?"))'
  } 2>&1 | tee "$OUT/versions.txt"
  rc=${PIPESTATUS[0]}
  timeout "$(plan 60 20)" python3 -m gpupipe info --json > "$OUT/info.json" 2>&1 || rc=1
  record versions "$rc" "$OUT/versions.txt"
fi
if want tests && has_time tests 60; then
  timeout "$(plan "${TESTS_TIMEOUT:-300}" 60)" python3 -m pytest -m gpu -v -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.log" | tail -30
  rc=${PIPESTATUS[0]}
  record tests "$rc" "log $OUT/pytest-gpu.log"
fi
if want kernel && has_time kernel 30; then
  kmib=256 krep=20
  [ "$ALL" -eq 1 ] && kmib=64 krep=10
  timeout "$(plan 120 30)" python3 -c 'import json, sys; from gpupipe.gpu.bench import base64_kernel_bandwidth as b; json.dump(b(int(sys.argv[2]) << 20, int(sys.argv[3])), open(sys.argv[1], "w"), indent=1)' \
    "$OUT/base64-kernel.json" "$kmib" "$krep" 2>&1 | tee "$OUT/kernel.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    python3 -m gpupipe.tools.goals --kernel "$OUT/base64-kernel.json" | tee "$OUT/kernel-goal.txt"
    rc=${PIPESTATUS[0]}
  fi
  record kernel "$rc" "$OUT/base64-kernel.json"
  # Nsight Compute, where installed: the full set on one launch of the kernel (the second, after a
  # warm-up), its raw page as CSV and a summary (memory/DRAM throughput %, top stall reason).
  NCU=${NCU:-$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)}
  if [ -n "$NCU" ] && [ -x "$NCU" ]; then
    timeout 300 "$NCU" --set full --kernel-name b64_batch --launch-skip 1 --launch-count 1 -f -o "$OUT/ncu-b64" \
      python3 -c 'from gpupipe.gpu.bench import base64_kernel_bandwidth as b; b(256 << 20, 2)' > "$OUT/ncu.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
      "$NCU" --import "$OUT/ncu-b64.ncu-rep" --page raw --csv > "$OUT/ncu-b64-raw.csv" 2>> "$OUT/ncu.log" &&
        "$NCU" --import "$OUT/ncu-b64.ncu-rep" --page details > "$OUT/ncu-b64-details.txt" 2>> "$OUT/ncu.log" &&
        python3 -m gpupipe.tools.ncu_summary "$OUT/ncu-b64-raw.csv" --json "$OUT/ncu-b64-summary.json" | tee "$OUT/ncu-b64-summary.txt"
      rc=${PIPESTATUS[0]}
    fi
    record kernel-ncu "$rc" "$OUT/ncu-b64-summary.txt, log $OUT/ncu.log"
  else
    echo "kernel: ncu not found; no Nsight Compute profile" | tee "$OUT/ncu.log"
  fi
fi
if want bench-gpu && has_time bench-gpu 140; then
  bmax=${BENCH_MAX_S:-300}
  [ "$ALL" -eq 1 ] && bmax=${BENCH_MAX_S:-100}
  timeout "$(plan 450 140)" python3 -m gpupipe bench --backend gpu --goals --max-seconds "$bmax" ${QUICK:+--quick} \
    --out "$OUT/bench-gpu" 2>&1 | tee "$OUT/bench-gpu.log" | tail -20
  rc=${PIPESTATUS[0]}
  record bench-gpu "$rc" "$OUT/bench-gpu/BENCH.md"
fi
if want goals && has_time goals 10; then
  echo "== goals"
  kernel_args=()
  [ -f "$OUT/base64-kernel.json" ] && kernel_args=(--kernel "$OUT/base64-kernel.json")
  python3 -m gpupipe.tools.goals "$OUT/bench-gpu/bench.json" "${kernel_args[@]}" > "$OUT/goals.txt" 2>&1
  rc=$?
  cat "$OUT/goals.txt"
  record goals "$rc" "$OUT/goals.txt"
fi
if want hwdec && has_time hwdec 60; then
  echo "== hwdec: DALI's hardware JPEG decoder settings"
  hw_args=()
  [ "$ALL" -eq 1 ] && hw_args=(--frames 16 --repeats 2)
  timeout "$(plan 300 60)" python3 -m gpupipe.tools.hwdec "${hw_args[@]}" --out "$OUT/hwdec.json" 2>&1 | tee "$OUT/hwdec.md"
  record hwdec "${PIPESTATUS[0]}" "$OUT/hwdec.md, $OUT/hwdec.json"
fi
if want png && has_time png 45; then
  echo "== png: 4K PNG decoders (CPU Pillow/libspng, GPU DALI/nvCOMP)"
  png_args=()
  [ "$ALL" -eq 1 ] && png_args=(--frames 4 --rounds 1)
  timeout "$(plan 300 45)" python3 -m gpupipe.tools.png_bench "${png_args[@]}" --out "$OUT/png-bench.json" 2>&1 | tee "$OUT/png-bench.log" | tail -8
  rc=${PIPESTATUS[0]}
  grep -E '^(PASS|FAIL|SKIP): 4K PNG' "$OUT/png-bench.log" > "$OUT/png-goals.txt" 2>/dev/null || true
  record png "$rc" "$OUT/png-bench.json, $OUT/png-goals.txt"
fi
if want video && has_time video 70; then
  vmax=${VIDEO_MAX_S:-300} vquick=${QUICK:+--quick}
  [ "$ALL" -eq 1 ] && vmax=${VIDEO_MAX_S:-45} vquick=--quick
  timeout "$(plan 450 70)" python3 -m gpupipe bench --backend gpu --video --max-seconds "$vmax" $vquick \
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
if want budget && has_time budget 75 && [ "$ALL" -eq 1 ]; then
  rc=0
  for variant in gpu cpu; do
    echo "== budget (one call): serve_load $variant"
    timeout "$(plan 1800 35)" python3 -m gpupipe.tools.serve_load --clients 8 --requests 30 --budget-mib 512 --format jpeg --size 1920x1080 \
      --backend "$variant" --out "$OUT/serve-load-$variant.json" > "$OUT/serve-load-$variant.log" 2>&1
    [ $? -le 1 ] || rc=1
  done
  record budget "$rc" "$OUT/serve-load-gpu.json, $OUT/serve-load-cpu.json (serve_load only in the one call)"
elif want budget && [ "$ALL" -eq 0 ]; then
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

if want summary; then
  timeout 60 python3 -m gpupipe.tools.session_goals "$OUT" --elapsed "$((SECONDS - START_S))" 2>&1 | tee "$OUT/session-goals.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 3 ] && rc=0  # goals NOT RUN (no GPU, or a step cut short) are named in the lines above, not a failing step
  record summary "$rc" "$OUT/session-goals.txt"
fi

echo "== steps ($OUT)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then exit 1; fi
if [ "$skipped" -ne 0 ]; then exit 3; fi
exit 0
