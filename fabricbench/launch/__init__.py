"""Launchers: start the ranks of a run (local processes here; Slurm in fabricbench.slurm)."""
