"""Slurm: batch scripts, job submission and following, result collection, and pairwise fabric sweeps."""
