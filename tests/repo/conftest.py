"""Tests of the repository itself: layering, packaging and generated documentation."""
