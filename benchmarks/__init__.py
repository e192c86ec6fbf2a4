"""Benchmarks of the publish path; run ``python benchmarks/run.py``.

See ``docs/contributing/benchmarks.md`` for the scenarios and how ratios are defined.
"""
