#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (as root), then runs it.
# Used as-is by CI (.ci/run) and by the README's Quick start.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=""
  for pkg in openmpi-bin libopenmpi-dev slurmctld slurmd slurm-client iproute2 util-linux make gcc; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $need >/dev/null
  fi
fi

# torch 2.13.0 first: its CPU build is on local disk; a bare requirement would pull a multi-GB CUDA build.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"
# The kernels' NVRTC compile tests fail (not skip) if NVRTC is missing; nvcc builds skip only without nvcc.
export FABRICBENCH_REQUIRE_NVRTC=1
python3 -m pytest -q "$@"
