"""fabricbench: collective-communication benchmarks and fabric diagnosis for GPU clusters."""

__version__ = "0.1.0"
