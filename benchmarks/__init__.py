"""Benchmarks of pagelens, each run as ``python -m benchmarks.<name>`` (see README.md)."""
