#!/usr/bin/env bash
# One-call GPU measurement for issue 5 (training throughput), for a lent H100/H200 machine.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; writes under $OUT (default ./bench_out)
#   bash benchmarks/gpu_check.sh --quick    # the same script on the CPU at tiny sizes (CI runs it:
#                                           # tests/test_benchmark_smoke.py), so it stays working without a GPU
#
# Installs nothing: the GPU image has torch, torchvision, timm, numpy, pillow, pluggy, typer, rich and
# pandas. nlbench runs from this checkout as a package: PYTHONPATH gets a temporary folder holding
# only a link to ./nlbench (never the repository root, where `import datasets` would find the plugin
# folder), which also wins over any other installed nlbench. The whole script stays under
# 8 minutes: the benchmark gets a time budget (rows that would not fit are reported as skipped,
# least important last) and a hard timeout; its JSON is rewritten after every row, so whatever ran
# is kept even if the timeout fires. The table is printed again at the very end, where the device
# tool's output tail shows it.
#
# Files under $OUT: env.txt (GPU, driver, versions), throughput.json (every row, the environment and
# the summary), throughput.log (full output).
#
# Knobs (environment): BENCH_BUDGET seconds for the rows [400], BENCH_TIMEOUT hard limit [455],
# BENCH_ARGS extra arguments for benchmarks/throughput, PYTHON interpreter [python3].
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/bench_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
PKG="$(mktemp -d)"
trap 'rm -rf "$PKG"' EXIT
ln -s "$PWD/nlbench" "$PKG/nlbench"   # this checkout's nlbench, without the root on sys.path
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export NLBENCH_DISABLE_PLUGIN_AUTOLOAD=1   # only this checkout's methods and datasets
DEVICE_ARGS=(--device cuda)
if [ "${1:-}" = "--quick" ]; then
  DEVICE_ARGS=(--device cpu --quick)
elif [ -n "${1:-}" ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--quick]" >&2
  exit 2
fi
BUDGET="${BENCH_BUDGET:-400}"
HARD="${BENCH_TIMEOUT:-455}"

{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm,power.limit \
    --format=csv 2>&1 || echo "nvidia-smi failed"
  # From $PKG: `python -` puts its working directory first on sys.path, and that must not be the root.
  (cd "$PKG" && "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "torchvision", "timm", "numpy", "PIL", "pluggy", "typer", "rich", "pandas", "triton"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as err:  # report, do not stop: the benchmark says what it could not do
        print(f"{name} MISSING ({type(err).__name__}: {err})")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import nlbench, nlbench.plugins
print("nlbench", nlbench.__version__, "from", nlbench.__file__)
print("methods", sorted(nlbench.plugins.get_registry().methods))
EOF
  ) 2>&1
  echo "cpus $(nproc)"; free -g 2>/dev/null | head -2; df -h /dev/shm /tmp 2>/dev/null
} 2>&1 | tee "$OUT/env.txt"

# shellcheck disable=SC2086
timeout --signal=INT --kill-after=20 "$HARD" \
  "$PY" benchmarks/throughput "${DEVICE_ARGS[@]}" --scale affectnet --time-budget "$BUDGET" \
  --json "$OUT/throughput.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/throughput.log"
rc=${PIPESTATUS[0]}
echo "benchmarks/throughput exit code $rc (124/130 = stopped by the hard timeout; the JSON keeps the rows that ran)"

if [ -s "$OUT/throughput.json" ]; then
  echo
  echo "================ results (again, from $OUT/throughput.json) ================"
  "$PY" benchmarks/throughput --show "$OUT/throughput.json"
fi
exit "$rc"
