"""Benchmarks: run with `python -m benchmarks.<name>`; numbers go to docs/benchmarks.md."""
