#!/usr/bin/env bash
# The direct NCCL backend run for real, as one rank on one GPU (the device machine: torch, CuPy; no network), about
# a minute: every collective, out of place and in place, float and every dtype at one size, with the checks on,
# plus the same run on torch's nccl backend for comparison. Writes results/reference/nccl-direct-<gpu-model>/
# (table, -J JSON, results directory) and copies it under $OUT when set. Exit status: the first failed step.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
py=${PYTHON:-python3}
model=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n-' '_' | sed 's/_*$//')
if [ -z "$model" ]; then echo "no GPU visible (nvidia-smi lists none): nothing to run" >&2; exit 2; fi
dir=results/reference/nccl-direct-$model
rm -rf "$dir"; mkdir -p "$dir"
status=0
step() {  # step NAME CMD...
  local name=$1; shift
  echo "+ $*" | tee "$dir/$name.txt"
  "$@" 2>&1 | tee -a "$dir/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "# exit $rc" | tee -a "$dir/$name.txt"
  [ "$status" -eq 0 ] && status=$rc
}
ops="all_reduce all_gather reduce_scatter broadcast reduce all_to_all sendrecv"
step direct $py -m fabricbench run $ops --backend nccl-direct -P 1 -b 8 -e 128M -f 4 -n 20 -w 5 \
  --out "$dir/direct" -J "$dir/direct.json"
step direct-dtypes $py -m fabricbench run all_reduce broadcast reduce --backend nccl-direct -P 1 -d all -o all \
  -b 1M -e 1M -n 5 --out "$dir/direct-dtypes"
step direct-graph $py -m fabricbench run all_reduce --backend nccl-direct -P 1 -b 8 -e 1M -f 8 -G 2 \
  --out "$dir/direct-graph"
step torch-nccl $py -m fabricbench run $ops --backend nccl -P 1 -b 8 -e 128M -f 4 -n 20 -w 5 --out "$dir/torch"
if [ -n "${OUT:-}" ]; then cp -r "$dir" "$OUT/"; fi
exit "$status"
