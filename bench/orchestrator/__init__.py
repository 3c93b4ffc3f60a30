"""Call orchestrator benchmark: `python -m bench.orchestrator` (see README.md)."""
