"""`fabricbench tune`: measured, verified tuning of NCCL and Open MPI collectives, written where the libraries
read it (NCCL tuner config, nccl.env, Open MPI coll tuned rules). See docs/tuning.md."""
