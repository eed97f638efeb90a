#!/usr/bin/env bash
# The engine's GPU paths, run for real on a machine with one or more GPUs (the device machine or a node):
# NCCL with one rank per GPU (aggregate, per-iter with CUDA events, CUDA-graph replay, every dtype the check
# covers), and MPI with CuPy buffers (host-staged unless the MPI is CUDA-aware). Writes everything under
# results/reference/engine-<gpu-model>/ so the numbers can be committed.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '__')
ngpu=$(nvidia-smi -L | wc -l)
out=results/reference/engine-${model}
mkdir -p "$out"
run() { echo "+ fabricbench $*"; python3 -m fabricbench "$@"; }
run run all --backend nccl --nprocs "$ngpu" -b 8 -e 1G -f 4 --out "$out/nccl-aggregate" --json "$out/nccl-aggregate.json" | tee "$out/nccl-aggregate.txt"
run run all_reduce --backend nccl --nprocs "$ngpu" -b 8 -e 256M -f 8 --timing per-iter --out "$out/nccl-per-iter" | tee "$out/nccl-per-iter.txt"
run run all_reduce --backend nccl --nprocs "$ngpu" -b 8 -e 1M -f 4 --cuda-graph --out "$out/nccl-graph" | tee "$out/nccl-graph.txt"
for dt in half bfloat16 int8 double; do
  run run all_reduce reduce_scatter --backend nccl --nprocs "$ngpu" -b 1M -e 1M -d "$dt" -o max -c 3 --out "$out/nccl-$dt" -q
done
run run all_reduce --backend nccl --nprocs "$ngpu" -b 1M -e 1M -o avg -c 3 --out "$out/nccl-avg" -q
if python3 -c "import mpi4py, cupy" 2>/dev/null && command -v mpirun >/dev/null; then
  run run all_reduce sendrecv --backend mpi --nprocs 2 -b 1K -e 16M -f 16 --out "$out/mpi-cupy" | tee "$out/mpi-cupy.txt"
fi
echo "results in $out"
