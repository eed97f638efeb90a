"""The fabric lab: a real Slurm cluster made of network namespaces on one machine (`fabricbench lab`).

Modules, one job each: plan (names, addresses, leaves), netns (iproute2, namespace processes), tc (shaping),
slurm_cluster (slurm.conf/topology.conf, daemons, sinfo), state (state directory, state.json), topology
(topology.yaml for the analyzer), probe (TCP throughput between nodes), manager (up/down/degrade/heal/status),
cli (the commands). docs/lab.md is the user's guide.
"""
