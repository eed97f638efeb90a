#!/usr/bin/env bash
# The GPU kernels of fabricbench (cuda_kernels/*.cu), run for real on a machine with one or more GPUs: the
# device machine (torch, CuPy, mpi4py, nvcc; no network) or a cluster node. One short script, about 2-4 minutes
# on one H100/H200:
#   1. the nvcc build of every kernel (sm_80, sm_90, sm_100 + PTX, warnings as errors)
#   2. the GPU tests (pytest -m gpu) and the GPU-free tests of the area
#   3. fabricbench selftest --gpu (kernels, pattern, planted mismatch, gate, SM copy vs cudaMemcpy, latency;
#      pair tests when there are 2+ GPUs), which writes results/reference/<gpu-model>.json
#   4. fabricbench nvlink, when there are 2+ GPUs
# Everything it prints is also saved under results/reference/gpu-<gpu-model>/ (and under $OUT when set, for the
# device tool). Exit status: that of the first step that failed (the later steps still run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
model=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n-' '_' | sed 's/_*$//')
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ -z "$model" ] || [ "$ngpu" -lt 1 ]; then
  echo "no GPU visible (nvidia-smi lists none): nothing to run" >&2
  exit 2
fi
dir=results/reference/gpu-$model
mkdir -p "$dir"
status=0
step() {  # step NAME CMD...: run, tee to $dir/NAME.txt, keep the first failure
  local name=$1; shift
  echo "+ $*" | tee "$dir/$name.txt"
  "$@" 2>&1 | tee -a "$dir/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "# exit $rc" | tee -a "$dir/$name.txt"
  [ "$status" -ne 0 ] || status=$rc
}
# The GPU commands alone (python -m fabricbench.gpu): the machine cannot install another area's dependencies.
fb() { "$py" -m fabricbench.gpu "$@"; }

{ nvidia-smi; nvidia-smi topo -m; nvcc --version; "$py" -c 'import cupy, torch; print("cupy", cupy.__version__, "torch", torch.__version__)'; } \
  >"$dir/machine.txt" 2>&1
step nvcc make -C cuda_kernels BUILD="$PWD/build/cuda_kernels"
step pytest "$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu_device.py tests/test_gpu_kernels.py tests/test_gpu_host.py
step selftest fb selftest --gpu --out results/reference
if [ "$ngpu" -ge 2 ]; then
  step nvlink fb nvlink --out "$dir/nvlink"
else
  echo "nvlink not run: $ngpu GPU (pair tests need 2 or more)" | tee "$dir/nvlink.txt"
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/ref" && cp "$dir"/*.txt "$OUT/ref/" && cp results/reference/*.json "$OUT/ref/" 2>/dev/null
  [ -f "$dir/nvlink/results.parquet" ] && cp "$dir/nvlink/results.parquet" "$OUT/ref/nvlink-results.parquet"
fi
echo "outputs in $dir and results/reference/ (exit $status)"
exit "$status"
