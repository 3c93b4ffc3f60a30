"""The fault suite: break the whole running stack the ways production breaks, print one table.

`python -m bench.faults [--quick] [--json] [--only NAME ...]` — see README.md beside this file.
"""
