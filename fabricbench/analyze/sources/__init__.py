"""Evidence sources of the analyzer (see fabricbench/analyze/evidence.py): one module per source, each
registering itself with `@evidence.source(name, order)`. Modules here are imported automatically."""
