"""The benchmark engine: sizes, dtypes, data patterns, timing statistics and the per-rank driver."""
