#!/usr/bin/env bash
# The GPU check: one prepared run of every GPU path of fabricbench on a fresh GPU machine (torch, CuPy, mpi4py
# and nvcc installed, no network; 1 or 8 GPUs), within GPU_CHECK_BUDGET_S (default 450 s, under 8 minutes).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        (OUT defaults to results/gpu-check-<time>)
#
# Every step records pass / fail / skip (with the reason) in $OUT/steps.tsv and goes on: a failure never stops
# the check. Everything it produces is under $OUT:
#   machine.txt                   nvidia-smi, topology, nvcc, library versions
#   logs/<step>.log               each step's command line, output (the tables) and exit status
#   runs/<step>/                  results.parquet + run.json (+ NCCL logs) of each run
#   results/reference/<gpu>.json  selftest --gpu's reference file
#   steps.tsv, summary.txt        one line per step; the summary printed last
# Sizes are capped to the GPU's free memory and the host's available memory (caps.txt says how).
#
# Steps (in order of value, each with its own time limit, skipped with a reason when the budget is spent):
#   selftest        fabricbench selftest --gpu (kernels, pattern, gate, SM copy vs cudaMemcpy, latency, pairs)
#   nccl-*          fabricbench run on NCCL with one rank, every op, -c 1: aggregate, per-iter, CUDA graphs
#   nccl-direct-*   the same on the direct NCCL backend, when `fabricbench run --help` lists nccl-direct
#   nccl-all-gpus   every op on all GPUs (2 or more)
#   mpi-cupy        MPI with CuPy buffers, when mpirun exists
#   nvlink          the full matrix on 2+ GPUs; on one GPU it must refuse with its message
#   ib-loopback     fabricbench ib --loopback, when RDMA devices exist (and 2+ GPUs)
#   tune            fabricbench tune all_reduce with a short budget, when `fabricbench tune --help` exists
#   tuner-plugin    NCCL_TUNER_PLUGIN=<nccl_tuner build> NCCL_DEBUG=INFO shows NCCL loaded it, when nccl_tuner/ exists
#   nvcc            make -C cuda_kernels (sm_80/sm_90/sm_100 + PTX, warnings as errors)
#   pytest-gpu      the GPU tests (pytest -m gpu)
# Environment: GPU_CHECK_BUDGET_S, GPU_CHECK_SKIP (comma list of step names; `versions` skips the library
# versions in machine.txt), FABRICBENCH (the command;
# default `fabricbench` on PATH, else python3 -m fabricbench), PYTHON, GPU_CHECK_SYSFS (/sys),
# GPU_CHECK_TUNER_DIR (nccl_tuner/).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-$REPO/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/results/reference" "$OUT/build" || exit 2
OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SKIP=",${GPU_CHECK_SKIP:-},"
SYSFS=${GPU_CHECK_SYSFS:-/sys}
TUNER_DIR=${GPU_CHECK_TUNER_DIR:-$REPO/nccl_tuner}
if [ -n "${FABRICBENCH:-}" ]; then read -r -a FB <<<"$FABRICBENCH"; FBGPU=("${FB[@]}")
elif command -v fabricbench >/dev/null 2>&1; then FB=(fabricbench); FBGPU=(fabricbench)
else  # not installed: from this checkout; the GPU commands through their own entry point, which imports no
  # other area (a missing dependency of another area cannot stop them)
  FB=("$PY" -m fabricbench); FBGPU=("$PY" -m fabricbench.gpu); fi
START=$(date +%s)
STEPS=$OUT/steps.tsv
printf 'step\tstatus\tseconds\tnote\n' >"$STEPS"

elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( BUDGET - $(elapsed) )); }
record() {  # record NAME STATUS SECONDS NOTE
  local note=${4//$'\t'/ }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${note//$'\n'/ }" >>"$STEPS"
  printf '[%4ss] %-22s %-4s %s\n' "$(elapsed)" "$1" "$2" "${note:0:150}"
}
skip() { record "$1" skip 0 "$2"; }
last_line() { grep -v -e '^\s*$' -e '^+ ' -e '^# exit ' "$1" 2>/dev/null | tail -1 | cut -c1-200; }

# run_step NAME LIMIT_S [--expect-rc RC --expect TEXT] CMD...: run with a time limit (cut to what is left of the
# budget), output to logs/NAME.log; pass when it exits 0 (or with the expected refusal).
run_step() {
  local name=$1 limit=$2; shift 2
  local expect_rc="" expect_text=""
  if [ "${1:-}" = "--expect-rc" ]; then expect_rc=$2; expect_text=$4; shift 4; fi
  if [[ $SKIP == *",$name,"* ]]; then skip "$name" "skipped by GPU_CHECK_SKIP"; return 0; fi
  local left; left=$(remaining)
  if [ "$left" -lt 15 ]; then skip "$name" "time budget spent (${BUDGET} s)"; return 0; fi
  [ "$limit" -gt $(( left - 5 )) ] && limit=$(( left - 5 ))
  local log=$OUT/logs/$name.log t0 rc
  # timeout runs programs, not shell functions: fb / fbgpu stand for the fabricbench command
  if [ "$1" = fb ]; then shift; set -- "${FB[@]}" "$@"; elif [ "$1" = fbgpu ]; then shift; set -- "${FBGPU[@]}" "$@"; fi
  t0=$(date +%s)
  { printf '+'; printf ' %q' "$@"; printf '\n'; } >"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1 </dev/null
  rc=$?
  echo "# exit $rc" >>"$log"
  local secs=$(( $(date +%s) - t0 ))
  if [ -n "$expect_rc" ]; then
    if [ "$rc" = "$expect_rc" ] && grep -q -- "$expect_text" "$log"; then
      record "$name" pass "$secs" "refused as expected: $(grep -m1 -- "$expect_text" "$log" | cut -c1-160)"
    else
      record "$name" fail "$secs" "expected exit $expect_rc with '$expect_text', got exit $rc: $(last_line "$log")"
    fi
  elif [ "$rc" = 0 ]; then
    record "$name" pass "$secs" "$(last_line "$log")"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$name" fail "$secs" "timed out after ${limit} s: $(last_line "$log")"
  else
    record "$name" fail "$secs" "exit $rc: $(last_line "$log")"
  fi
  return 0
}
fb() { "${FB[@]}" "$@"; }  # outside run_step (help probes)

# -- the machine ------------------------------------------------------------------------------------------------
{
  echo "# date: $(date -u +%FT%TZ)  host: $(hostname)  budget: ${BUDGET} s  fabricbench: ${FB[*]}"
  nvidia-smi 2>&1; nvidia-smi topo -m 2>&1; nvcc --version 2>&1
  echo "# versions"
  [[ $SKIP == *",versions,"* ]] || "$PY" -c 'import sys; print("python", sys.version.split()[0])
for m in ("torch", "cupy", "mpi4py", "numpy", "pyarrow"):
    try:
        mod = __import__(m); print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "unavailable:", e)
try:
    import torch; print("nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else "no cuda")
except Exception as e:
    print("nccl unavailable:", e)' 2>&1
  command -v mpirun && mpirun --version 2>&1 | head -2
  ls "$SYSFS/class/infiniband" 2>&1
} >"$OUT/machine.txt" 2>&1

GPU_LINES=$(nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits 2>/dev/null)
NGPU=$(printf '%s\n' "$GPU_LINES" | grep -c . || true)
GPU_NAME=$(printf '%s\n' "$GPU_LINES" | head -1 | cut -d, -f1 | sed 's/^ *//; s/ *$//')
FREE_MIB=$(printf '%s\n' "$GPU_LINES" | awk -F, 'NF>=3 {gsub(/ /,"",$3); if (min=="" || $3+0<min) min=$3+0} END {print min+0}')
HOST_MIB=$(awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo 2>/dev/null || echo 0)
# Caps: a run's largest message <= free GPU memory / 8 (send, receive, pool, NCCL's buffers) and <= available
# host memory / 32 (the data check builds its expected values on the host), at most 1 GiB; the selftest's
# copy buffers (2 per GPU) <= free GPU memory / 4, at most 1 GiB; nvlink's (2 per GPU + the latency chain)
# <= free / 8, at most 256 MiB. Powers of two.
pow2_mib() { local v=$1 p=1; while [ $(( p * 2 )) -le "$v" ]; do p=$(( p * 2 )); done; echo "$p"; }
min3() { local a=$1; for b in "$2" "$3"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }
RUN_MAX_MIB=$(pow2_mib "$(min3 1024 $(( FREE_MIB / 8 )) $(( HOST_MIB / 32 )))")
SELF_MIB=$(pow2_mib "$(min3 1024 $(( FREE_MIB / 4 )) $(( HOST_MIB / 8 )))")
PAIR_MIB=$(pow2_mib "$(min3 256 $(( FREE_MIB / 8 )) $(( HOST_MIB / 8 )))")
{
  echo "gpus: $NGPU ($GPU_NAME); smallest free GPU memory: ${FREE_MIB} MiB; host MemAvailable: ${HOST_MIB} MiB"
  echo "run max message: ${RUN_MAX_MIB} MiB; selftest copy buffer: ${SELF_MIB} MiB; nvlink/pair buffer: ${PAIR_MIB} MiB"
} | tee "$OUT/caps.txt"
if [ "$NGPU" -lt 1 ]; then
  record machine fail 0 "nvidia-smi lists no GPU: the GPU steps below are expected to fail"
else
  record machine pass 0 "$NGPU x $GPU_NAME"
fi
RUN_E="${RUN_MAX_MIB}M"
ONE=(-b 8 -e "$RUN_E" -f 16 -c 1 --nprocs 1 -w 3 -n 10)  # fabricbench's own --timeout stays below each step's

# -- measurements ----------------------------------------------------------------------------------------------
run_step selftest 150 fbgpu selftest --gpu --size "${SELF_MIB}M" --pair-size "${PAIR_MIB}M" --loops 4 --samples 3 \
  --out "$OUT/results/reference"

nccl_steps() {  # nccl_steps PREFIX BACKEND
  local p=$1 b=$2
  run_step "$p-aggregate" 90 fb run all --backend "$b" "${ONE[@]}" --timeout 80 --out "$OUT/runs/$p-aggregate" \
    --json "$OUT/runs/$p-aggregate.json"
  run_step "$p-per-iter" 60 fb run all_reduce all_gather sendrecv --backend "$b" "${ONE[@]}" --timing per-iter \
    --timeout 50 --out "$OUT/runs/$p-per-iter"
  run_step "$p-graph" 60 fb run all_reduce --backend "$b" -b 8 -e 16M -f 16 -c 1 --nprocs 1 --cuda-graph \
    --timeout 50 --out "$OUT/runs/$p-graph"
}
nccl_steps nccl nccl

RUN_HELP=$(fb run --help 2>&1)
if grep -q -- "nccl-direct" <<<"$RUN_HELP"; then
  nccl_steps nccl-direct nccl-direct
else
  skip nccl-direct "fabricbench run --help does not list the nccl-direct backend"
fi

if [ "$NGPU" -ge 2 ]; then
  run_step nccl-all-gpus 90 fb run all --backend nccl --nprocs "$NGPU" -b 1K -e "$RUN_E" -f 64 -c 1 --timeout 80 \
    --out "$OUT/runs/nccl-all-gpus"
else
  skip nccl-all-gpus "fewer than 2 GPUs ($NGPU)"
fi

if ! command -v mpirun >/dev/null 2>&1; then
  skip mpi-cupy "mpirun not found"
elif ! "$PY" -c "import cupy, mpi4py" >/dev/null 2>&1; then
  skip mpi-cupy "CuPy or mpi4py cannot be imported: no MPI run with CuPy buffers"
else
  run_step mpi-cupy 60 fb run all_reduce sendrecv --backend mpi --nprocs 2 -b 1K -e 16M -f 16 -c 1 --timeout 50 \
    --out "$OUT/runs/mpi-cupy"
fi

if [ "$NGPU" -ge 2 ]; then
  run_step nvlink 150 fbgpu nvlink --size "${PAIR_MIB}M" --loops 8 --samples 3 --out "$OUT/runs/nvlink"
else
  run_step nvlink 60 --expect-rc 2 --expect "needs 2 or more GPUs" fbgpu nvlink --out "$OUT/runs/nvlink"
fi

if [ -n "$(ls -A "$SYSFS/class/infiniband" 2>/dev/null)" ]; then
  if [ "$NGPU" -ge 2 ]; then
    run_step ib-loopback 90 fbgpu ib --loopback --size 64M --iters 10 --timeout 60 --out "$OUT/runs/ib-loopback"
  else
    run_step ib-loopback 60 --expect-rc 2 --expect "GPU" fbgpu ib --loopback --out "$OUT/runs/ib-loopback"
  fi
else
  skip ib-loopback "no RDMA device under $SYSFS/class/infiniband"
fi

TUNE_HELP=$(fb tune --help 2>&1); TUNE_RC=$?
if [ "$TUNE_RC" = 0 ]; then
  tune_args=(tune all_reduce)
  grep -q -- "--budget" <<<"$TUNE_HELP" && tune_args+=(--budget 60)
  grep -q -- "--nprocs" <<<"$TUNE_HELP" && tune_args+=(--nprocs "$NGPU")
  grep -q -- "--out" <<<"$TUNE_HELP" && tune_args+=(--out "$OUT/runs/tune")
  run_step tune 90 fb "${tune_args[@]}"
else
  skip tune "fabricbench tune --help failed (exit $TUNE_RC): no tuner in this checkout"
fi

if [ -d "$TUNER_DIR" ]; then
  run_step tuner-build 60 make -C "$TUNER_DIR" BUILD="$OUT/build/nccl_tuner"
  PLUGIN=$(find "$OUT/build/nccl_tuner" "$TUNER_DIR" -name '*.so' 2>/dev/null | head -1)
  if [ -n "$PLUGIN" ]; then
    run_step tuner-plugin 60 env NCCL_TUNER_PLUGIN="$PLUGIN" NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,TUNING,ENV \
      "${FB[@]}" run all_reduce --backend nccl -b 1M -e 1M -c 1 --nprocs 1 --timeout 50 --out "$OUT/runs/tuner-plugin"
    if grep -qiE "tuner.*(loaded|using)|TUNER/Plugin" "$OUT/logs/tuner-plugin.log" "$OUT/runs/tuner-plugin/logs/"* 2>/dev/null; then
      record tuner-plugin-loaded pass 0 "$(grep -hiE -m1 "tuner.*(loaded|using)|TUNER/Plugin" "$OUT/logs/tuner-plugin.log" "$OUT/runs/tuner-plugin/logs/"* 2>/dev/null | head -1 | cut -c1-160)"
    else
      record tuner-plugin-loaded fail 0 "NCCL's INFO output does not show the tuner plugin $PLUGIN loaded"
    fi
  else
    skip tuner-plugin "no tuner plugin library (.so) built from $TUNER_DIR"
  fi
else
  skip tuner-plugin "no nccl_tuner/ in this checkout"
fi

if command -v "${NVCC:-nvcc}" >/dev/null 2>&1; then
  run_step nvcc 90 make -j4 -C cuda_kernels BUILD="$OUT/build/cuda_kernels" NVCC="${NVCC:-nvcc}"
else
  skip nvcc "nvcc not found"
fi
run_step pytest-gpu 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_gpu_device.py

# -- the summary (last, one screen) ------------------------------------------------------------------------------
"$PY" - "$OUT" >"$OUT/figures.txt" 2>&1 <<'PYEOF' || true
import glob, json, os, sys
out = sys.argv[1]
for path in sorted(glob.glob(os.path.join(out, "results", "reference", "*.json"))):
    try:
        rep = json.load(open(path))
    except Exception as err:
        print(f"{os.path.basename(path)}: unreadable ({err})"); continue
    fake = " (FAKE)" if rep.get("fake") else ""
    for c in rep.get("checks", []):
        if c.get("name") in ("local_sm", "local_memcpy") and c.get("gbps"):
            print(f"GPU {c['gpu']} {c['name']}: {c['gbps']:.1f} GB/s of bytes copied{fake}")
        elif c.get("name") == "sm-vs-memcpy":
            print(f"GPU {c['gpu']} SM copy / cudaMemcpy: {c.get('ratio', float('nan')):.3f}{fake}")
        elif c.get("name") == "latency-local":
            print(f"GPU {c['gpu']} latency: {c.get('ns_per_access', float('nan')):.0f} ns per access "
                  f"(band {c.get('band_ns')}){fake}")
try:
    import pyarrow.parquet as pq
except Exception:
    pq = None
for run in sorted(glob.glob(os.path.join(out, "runs", "*", "results.parquet"))):
    if pq is None:
        break
    name = os.path.basename(os.path.dirname(run))
    try:
        rows = [r for r in pq.read_table(run).to_pylist() if r.get("row_kind") == "op"]
    except Exception as err:
        print(f"{name}: unreadable ({err})"); continue
    for op in ("all_reduce", "sendrecv"):
        mine = [r for r in rows if r.get("op") == op]
        if mine:
            big = max(mine, key=lambda r: r.get("size_bytes") or 0)
            small = min(mine, key=lambda r: r.get("size_bytes") or 0)
            print(f"{name} {op} x{big.get('nranks')}: {big.get('size_bytes')} B busbw {big.get('busbw_gbps') or 0:.1f} GB/s; "
                  f"{small.get('size_bytes')} B {small.get('time_us') or 0:.1f} us")
PYEOF
{
  echo "==== fabricbench GPU check: $NGPU x ${GPU_NAME:-no GPU} on $(hostname), $(elapsed) s of ${BUDGET} s ===="
  awk -F'\t' 'NR>1 {printf "%-22s %-4s %4ss  %s\n", $1, $2, $3, substr($4, 1, 90)}' "$STEPS"
  echo "---- figures ----"
  head -20 "$OUT/figures.txt"
  awk -F'\t' 'NR>1 {n[$2]++} END {printf "---- %d pass, %d fail, %d skip ----\n", n["pass"], n["fail"], n["skip"]}' "$STEPS"
  echo "everything is under $OUT"
} >"$OUT/summary.txt"
cat "$OUT/summary.txt"
if awk -F'\t' 'NR>1 && $2=="fail" {found=1} END {exit !found}' "$STEPS"; then exit 1; fi
exit 0
