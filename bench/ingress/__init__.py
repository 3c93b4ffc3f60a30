"""Webhook ingress benchmark: `python -m bench.ingress` (see README.md)."""
