#!/usr/bin/env bash
# The health lifecycle on the fabric lab (issue 12, "Shown by"): 6 nodes on 3 leaves, five health runs in a row.
#   runs 1-2 healthy (baselines); run 3: lab3's NIC at 60% -> suspect, first seen = run 3;
#   run 4: still degraded -> regressed, confirmed in 2 of 3 runs against >= 2 partners -> drained with
#   'fabricbench:{auto} fabric: ...'; run 5: healed -> retest (maintenance reservation) passes -> resumed.
#   lab6, drained beforehand with Reason="maint: bios", is never touched.
# As root, from the repository root: bash benchmarks/health_lab_scenario.sh   (about 3 minutes; tests/test_health_lab.py
# runs the same steps with assertions)
set -euo pipefail
export FABRICBENCH_LAB_DIR=${FABRICBENCH_LAB_DIR:-/var/lib/fabricbench-lab-health-demo}
fabricbench lab up --nodes 6 --leaves 3 --link-rate 400mbit
trap 'fabricbench lab down' EXIT
eval "$(fabricbench lab env)"
W=$FABRICBENCH_LAB_DIR/shared/health
mkdir -p "$W"
scontrol update NodeName=lab6 State=DRAIN Reason="maint: bios"
run() {
  fabricbench health run --nodelist 'lab[1-6]' --budget 5m --history "$W/history" --textfile "$W/prom" \
    --topology "$FABRICBENCH_LAB_DIR/topology.yaml" --drain --drop 0.25 -b 1M -e 1M -n 4 --out "$W/run$1" || true
  scontrol show node lab3 lab6 | grep -E 'NodeName|State=|Reason' || true
}
run 1; run 2
fabricbench lab degrade --nic lab3 --rate 60%
run 3; run 4
fabricbench lab heal
run 5
fabricbench health history --history "$W/history"
fabricbench health report --history "$W/history" --out "$W/report.html" || true
