"""Benchmarks for a GPU machine, run as ``python -m benchmarks.gpu.<name>``."""
