"""Topology model: YAML files validated by a schema, a graph, expected bandwidth, discovery and drawings.

Modules: `rates` (units), `schema` (pydantic models), `load` (files and their errors), `efficiency` (line rate →
achievable per link class, with sources), `graph` (networkx graph of a topology), `expect` (pairs and
collectives), `show` (drawings), `discover/` (one module per tool output), `cli` (`fabricbench topo ...`).
"""
