"""Benchmark: N real-time calls through one media gateway process (see README.md)."""
