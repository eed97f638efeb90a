#!/usr/bin/env python3
"""A stand-in for `fabricbench run --backend mpi` with a deterministic library: the time of each size depends
only on the Open MPI allreduce algorithm the environment selects (forced MCA parameter, or the rules file read
with Open MPI's semantics), times 1 +- 1% noise. Used by tests/test_tune_session.py to drive the real tuning
loop (runner, halving, confirmation, writers, verify) without a noisy machine in the way.

Called as: fake_run.py -m fabricbench run OPS ... --out DIR ...
FAKE_GAIN_GONE=1: every algorithm behaves like the default (an 'upgrade' that removed the gain).
FABRICBENCH_INJECT set: the check finds wrong values (exit 1), as the real run does.
"""
import os
import random
import sys
from pathlib import Path

from fabricbench.results.io import atomic_write_json, write_results
from fabricbench.tune import ompi_rules

# algorithm -> µs at 1 KiB, 64 KiB, 1 MiB. 0 = Open MPI's own decision (the default).
TIMES = {0: (10.0, 200.0, 3000.0), 3: (5.0, 260.0, 4000.0), 4: (20.0, 210.0, 1500.0), 6: (15.0, 400.0, 2900.0),
         5: (30.0, 450.0, 2000.0)}
# segmented ring (5): time x this factor by segment size (unimodal, best at 32 KiB; 0 = no segmentation)
SEGSIZE_FACTOR = {0: 1.0, 524288: 0.9, 131072: 0.7, 32768: 0.6, 8192: 0.8}
SIZES = (1024, 65536, 1048576)
# --backend nccl: (algorithm, protocol) -> µs; NCCL's default picks ring/simple. Channels (from the tuner config
# or NCCL_MAX_CTAS) cost 5% per doubling away from 16; NCCL_CROSS_NIC=1 saves 30% everywhere.
NCCL_TIMES = {("ring", "simple"): (10.0, 200.0, 3000.0), ("tree", "ll"): (5.0, 190.0, 3500.0),
              ("ring", "ll128"): (12.0, 150.0, 2900.0)}
# NCCL_BUFFSIZE (debug-only) for ring/ll128: 8 MiB is 20% faster than the 4 MiB default, 16 MiB 10%


def nccl_time(i: int, size: int) -> float:
    import math

    from fabricbench.tune import nccl_conf

    algo = (os.environ.get("NCCL_ALGO", "ring").lower(), os.environ.get("NCCL_PROTO", "simple").lower())
    channels = int(os.environ.get("NCCL_MAX_CTAS", "16"))
    conf = os.environ.get("NCCL_TUNER_CONFIG_FILE")
    if conf and os.environ.get("NCCL_TUNER_PLUGIN"):
        rule = nccl_conf.first_match(nccl_conf.parse(Path(conf).read_text()), "allreduce", size, 2, 4, 1, 0)
        if rule:
            algo = (rule.algorithm, rule.protocol)
            channels = rule.channels if rule.channels > 0 else 16
    t = NCCL_TIMES.get(algo, NCCL_TIMES[("ring", "simple")])[i] * (1 + 0.05 * abs(math.log2(channels / 16)))
    if algo == ("ring", "ll128"):
        t *= {8 << 20: 0.8, 16 << 20: 0.9}.get(int(os.environ.get("NCCL_BUFFSIZE", 4 << 20)), 1.0)
    return t * (0.7 if os.environ.get("NCCL_CROSS_NIC") == "1" else 1.0)


def segsize(size: int) -> int:
    path = os.environ.get("OMPI_MCA_coll_tuned_dynamic_rules_filename")
    if path:
        rule = ompi_rules.lookup(ompi_rules.parse(Path(path).read_text()), 2, 4, size)
        if rule and rule.algorithm:
            return rule.segsize
    return int(os.environ.get("OMPI_MCA_coll_tuned_allreduce_algorithm_segmentsize", "0"))


def algorithm(size: int) -> int:
    if os.environ.get("FAKE_GAIN_GONE"):
        return 0
    path = os.environ.get("OMPI_MCA_coll_tuned_dynamic_rules_filename")
    if path:
        rule = ompi_rules.lookup(ompi_rules.parse(Path(path).read_text()), 2, 4, size)
        if rule and rule.algorithm:
            return rule.algorithm
    return int(os.environ.get("OMPI_MCA_coll_tuned_allreduce_algorithm", "0"))


def main() -> int:
    args = sys.argv[1:]
    out = Path(args[args.index("--out") + 1])
    inject = os.environ.get("FABRICBENCH_INJECT", "")
    if inject.startswith("hang"):
        import time

        time.sleep(600)
    if inject.startswith("die"):
        print("fabricbench: error: rank 1 was killed by SIGKILL", file=sys.stderr)
        return 1
    bad = bool(inject)
    rng = random.Random()
    rows = []
    for i, size in enumerate(SIZES):
        alg = algorithm(size)
        base = nccl_time(i, size) if "nccl" in args else TIMES.get(alg, TIMES[0])[i]
        if "nccl" not in args and alg == 5:
            base *= SEGSIZE_FACTOR.get(segsize(size), 1.0)
        t = base * (1 + 0.01 * rng.uniform(-1, 1))
        rows.append({"run_id": "fake", "row_kind": "op", "op": "all_reduce", "backend": "mpi", "nranks": 4,
                     "size_bytes": size, "time_us": t, "busbw_gbps": size / t / 1e3 * 1.5,
                     "nwrong": 3 if bad else 0, "status": "wrong-data" if bad else "ok"})
    write_results(out, rows, {"run_id": "fake", "nranks": 4, "hosts": ["node1", "node2"],
                              "versions": {"mpi": "fake Open MPI"}, "ranks": []})
    if bad:
        print("fabricbench: error: 3 wrong values", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
