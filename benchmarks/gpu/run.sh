#!/usr/bin/env bash
# The GPU run (issue 23) in one command, for a lent H100/H200, from the repository root:
#
#     bash benchmarks/gpu/run.sh
#
# $OUT (default /tmp/gdram-gpu-out) receives at most 8 files: env.txt, build.log, tests.log, sanitizer.log,
# operators.md, training.md, bench.log (the benchmarks' stderr and tracebacks) and summary.txt (one line per
# step: exit status, wall time, limit). No step stops the run: each runs under `timeout`, clamped so that the
# whole script ends within GDRAM_GPU_BUDGET seconds (default 450), and the Python steps stop starting new
# measurements before their limit, keeping what they measured (their reports are written line by line).
#
#   0. env.txt (nvidia-smi, versions); build and install the extension against the machine's own torch
#      (TORCH_CUDA_ARCH_LIST=9.0, --no-build-isolation --no-deps: our pinned torch is never fetched); check
#      from another folder (the checkout's gdram_ext/ would shadow the installed package) that the compiled
#      CUDA kernels load.
#   1. CUDA tests (every test marked `cuda`, from a scratch folder so that the installed package is the one
#      imported), side by side with compute-sanitizer memcheck, racecheck, synccheck and initcheck (4 processes)
#      on benchmarks/gpu/sanitize_case.py (every kernel, forward and backward, each dtype, mode and layout).
#   2. benchmarks/gpu/operators.py: retina and box ops against their peers, CUDA events, floors.
#   3. benchmarks/gpu/training.py: GDRAM's training step (eager, CUDA graph, torch.compile) against the
#      published retina's step; batch-1 GDRAM / F-GDRAM latency.
#   4. TNet: skipped while `gdram.TNet` does not exist.
#
# Without a GPU (a logic check here): GDRAM_GPU_BUILD=0 skips the build; the tests skip, the sanitizer is
# absent, and the Python steps run tiny shapes on the CPU.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/benchmarks/gpu"
OUT="${OUT:-/tmp/gdram-gpu-out}"
mkdir -p "$OUT"
BUDGET="${GDRAM_GPU_BUDGET:-450}"
START=$(date +%s)
DEADLINE=$((START + BUDGET - 10)) # the last 10 s: the closing lines
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x /opt/torch/.venv/bin/python3 ]; then
    PY=/opt/torch/.venv/bin/python3
else
    PY=python3
fi
WORK="$(mktemp -d /tmp/gdram-gpu.XXXXXX)" # Python runs here: no gdram_ext/ source folder in the way
cd "$WORK" || exit 1
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
: >"$OUT/bench.log"

note() { # a line in the summary and on stdout
    echo "$*" | tee -a "$SUMMARY"
}

# limit WANT: WANT seconds, or what is left before DEADLINE if less
limit() {
    local left=$((DEADLINE - $(date +%s)))
    if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# step NAME WANT LOG COMMAND...: run COMMAND (a program or an exported function) under `timeout` (limit WANT),
# stdin closed, appending its output to LOG; one summary line with its exit status and wall time. Never fails.
step() {
    local name=$1 want=$2 log=$3
    shift 3
    local seconds
    seconds=$(limit "$want")
    if [ "$seconds" -lt 5 ]; then
        note "$(printf '%-16s skipped: no time left before the deadline' "$name")"
        return 0
    fi
    echo "===== $name (limit ${seconds}s): $*" >>"$log"
    local began ended rc
    began=$(date +%s.%N)
    timeout -k 5 "$seconds" bash -c '"$@"' "$name" "$@" </dev/null >>"$log" 2>&1
    rc=$?
    ended=$(date +%s.%N)
    local verdict=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        verdict="TIMED OUT"
    elif [ "$rc" -ne 0 ]; then
        verdict=FAILED
    fi
    echo "===== $name: exit $rc" >>"$log"
    note "$(printf '%-16s rc=%-3s %6.1fs (limit %ss) %s' "$name" "$rc" "$(awk "BEGIN {print $ended - $began}")" \
        "$seconds" "$verdict")"
    return 0
}

note "GPU run of $ROOT, budget ${BUDGET}s, python $PY, started $(date -u +%FT%TZ)"

# ---------------------------------------------------------------------------------------------- 0. env
env_info() {
    echo "## nvidia-smi"
    nvidia-smi || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit \
        --format=csv 2>/dev/null
    echo "## python / torch"
    "$PY" - <<'EOF'
import platform, sys
import torch
print("python", sys.version.split()[0], sys.executable, platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          f"{p.total_memory / 2**30:.0f} GiB", f"L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")
else:
    print("device: no CUDA")
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except ImportError as error:
    print("torchvision missing:", error)
EOF
    echo "## nvcc / compute-sanitizer"
    nvcc --version 2>&1 | tail -2 || true
    "$SANITIZER" --version 2>&1 | head -3 || true
    echo "## machine"
    nproc
    free -g | head -2
    echo "## checkout"
    git -C "$ROOT" log -1 --oneline 2>/dev/null || echo "(no git metadata)"
    git -C "$ROOT" status --short 2>/dev/null | head -40
}
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)"
SANITIZER="${SANITIZER:-compute-sanitizer}"
export PY ROOT HERE OUT SANITIZER
export -f env_info
step env 30 "$OUT/env.txt" env_info

# -------------------------------------------------------------------------------------------- 0. build
if [ "${GDRAM_GPU_BUILD:-1}" = 1 ]; then
    build() {
        cd "$ROOT" || return 1
        TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
            "$PY" -m pip install -v --no-build-isolation --no-deps --no-index --no-cache-dir .
    }
    export -f build
    step build 240 "$OUT/build.log" build
else
    note "build            skipped (GDRAM_GPU_BUILD=0)"
fi
check_import() {
    "$PY" - <<'EOF'
import sys
import gdram_ext
active = gdram_ext.backend()
print("gdram_ext", active, "from", gdram_ext.__file__, "box_glimpse:", hasattr(gdram_ext, "box_glimpse"))
sys.exit(0 if active.name == "compiled" and "cuda" in active.kernels else 1)
EOF
}
export -f check_import
step import-check 30 "$OUT/build.log" check_import

# ---------------------------------------------------------------------------- 1. tests beside sanitizer
TEST_TIMEOUT=""
if "$PY" -c "import pytest_timeout" 2>/dev/null; then TEST_TIMEOUT="--timeout=120"; fi
run_tests() {
    # every test marked `cuda` (retina, boxes, the model); a module that fails to import stops no other
    "$PY" -m pytest "$ROOT/tests" -m cuda -q -rfEs --tb=short --continue-on-collection-errors $TEST_TIMEOUT
}
run_backend_tests() {
    # the backend's and the dispatcher's checks that the CUDA kernels are built and registered
    "$PY" -m pytest "$ROOT/tests/retina/test_backend.py" "$ROOT/tests/retina/test_dispatcher.py" -k cuda -q -rfEs \
        --tb=short $TEST_TIMEOUT
}
sanitize() { # sanitize TOOL: the small case under compute-sanitizer --tool TOOL
    local tool=$1
    shift
    if ! command -v "$SANITIZER" >/dev/null 2>&1 && [ ! -x "$SANITIZER" ]; then
        echo "compute-sanitizer not found"
        return 2
    fi
    env "$@" "$SANITIZER" --tool "$tool" --error-exitcode 3 --print-limit 30 "$PY" "$HERE/sanitize_case.py"
}
export TEST_TIMEOUT
export -f run_tests run_backend_tests sanitize
GROUP_END=$(($(date +%s) + 120)) # the tests and the four sanitizer tools run side by side, up to 120 s
if [ "$GROUP_END" -gt "$DEADLINE" ]; then GROUP_END=$DEADLINE; fi
(
    DEADLINE=$GROUP_END
    step tests 120 "$OUT/tests.log" run_tests
    step tests-backend 30 "$OUT/tests.log" run_backend_tests
) &
for tool in memcheck racecheck synccheck initcheck; do
    case $tool in
    memcheck | initcheck) extra=PYTORCH_NO_CUDA_MEMORY_CACHING=1 ;;
    *) extra=PYTORCH_NO_CUDA_MEMORY_CACHING=0 ;;
    esac
    (
        DEADLINE=$GROUP_END
        step "$tool" 120 "$WORK/sanitizer-$tool.log" sanitize "$tool" "$extra"
    ) &
done
wait
cat "$WORK"/sanitizer-memcheck.log "$WORK"/sanitizer-racecheck.log "$WORK"/sanitizer-synccheck.log \
    "$WORK"/sanitizer-initcheck.log >"$OUT/sanitizer.log" 2>/dev/null
grep -E "[0-9]+ (passed|failed|error|skipped|deselected)|no tests ran" "$OUT/tests.log" 2>/dev/null |
    sed 's/^/  tests: /' | tee -a "$SUMMARY"
grep -E "ERROR SUMMARY|sanitize_case:|^FAILED|not found" "$OUT/sanitizer.log" 2>/dev/null | sed 's/^/  sanitizer: /' |
    tee -a "$SUMMARY"

# ------------------------------------------------------------------------------------ 2. operators
seconds=$(limit 100)
step operators 100 "$OUT/bench.log" "$PY" "$HERE/operators.py" --out "$OUT/operators.md" --budget $((seconds - 15))

# ------------------------------------------------------------------------------------- 3. training
seconds=$(limit 200)
step training 200 "$OUT/bench.log" "$PY" "$HERE/training.py" --out "$OUT/training.md" --budget $((seconds - 25))

# ----------------------------------------------------------------------------------------- 4. TNet
if timeout 60 "$PY" -c "import gdram; gdram.TNet" >>"$OUT/bench.log" 2>&1; then
    TNET="skipped: gdram.TNet exists, but this script has no TNet benchmark yet"
else
    TNET="skipped: gdram.TNet does not exist yet"
fi
note "tnet             $TNET"
printf '\n## TNet\n\n%s\n' "$TNET" >>"$OUT/training.md"

# ------------------------------------------------------------------------------------------- close
{
    echo "## after the run"
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1
} >>"$OUT/env.txt"
note "total            $(($(date +%s) - START))s of ${BUDGET}s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
rm -rf "$WORK"
for file in operators.md training.md; do
    echo
    echo "################ $file"
    cat "$OUT/$file" 2>/dev/null || echo "(missing)"
done
echo
echo "################ summary.txt"
cat "$SUMMARY"
exit 0
