"""Periodic fabric health: node checks, budgeted sweeps, a Parquet history with per-component regression
states, the drain/resume lifecycle, Prometheus textfile metrics and reports (`fabricbench health ...`).

Modules (one job each): `checks/` (node-local checks, one registered entry each), `nodecheck` (run checks,
retry failures once), `history` (the Parquet store and its DuckDB views), `rows` (measurements into history
rows), `states` (per-component baseline and state), `plan` (what fits a budget), `runner` (one nightly run),
`lifecycle` (drain/resume decisions on top of fabricbench.slurm.nodes), `prom` (textfile collector file),
`report` (HTML/Markdown/JUnit), `schedule` (scrontab entry), `cli`.
"""
