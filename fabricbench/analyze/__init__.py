"""Analyzer: import measurements, judge them against the fleet, a baseline and the topology, localize faults.

Modules (one job each): `model` (the normalized measurements every importer produces), `importers/` (one module
per input format), `fleet` (robust medians and spreads per path class and size), `pairfit` (directed pair
matrices: send and receive terms per node, residual paths), `tomography` (the same min-model over switch
links), `matrices` (node x rail and GPU x GPU), `groups` (collectives as group tests), `verdicts` (the verdict
record and its confidence), `analysis` (orchestration), `criteria` (acceptance YAML), `drain` (Slurm),
`simulate` (synthetic fabrics with injected faults), `report_*` (text, md, html, json, junit), `cli`.
"""

